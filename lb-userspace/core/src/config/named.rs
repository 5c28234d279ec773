//! The accepted spellings of the configuration's enumerated values ([`Named`]), for
//! parsing and error messages (the config file's and the CLI's).

use std::fmt;

use super::{
    BackendState, CheckKind, Forwarding, InFlight, LoadSource, OnDown, Protocol, Scheduler, XdpMode,
};
use crate::load::presets::Preset;

/// Accepted spellings, for error messages and parsing (the config file's and the CLI's).
pub trait Named: Sized + Copy + PartialEq + 'static {
    /// The key that holds this value.
    const FIELD: &'static str;
    /// Every accepted spelling and its value.
    const ALL: &'static [(&'static str, Self)];
    /// Names that are planned but not implemented: rejected as "not supported yet" rather
    /// than "unknown".
    const RESERVED: &'static [&'static str];
    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(n, _)| n)
    }
}

macro_rules! named {
    ($t:ty, $field:literal, [$($s:literal => $v:expr),* $(,)?] $(, reserved: $reserved:expr)?) => {
        impl Named for $t {
            const FIELD: &'static str = $field;
            const ALL: &'static [(&'static str, Self)] = &[$(($s, $v)),*];
            const RESERVED: &'static [&'static str] = named!(@reserved $($reserved)?);
        }
        impl $t {
            /// The name used in the configuration file.
            pub fn as_str(self) -> &'static str {
                self.name()
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
    (@reserved $reserved:expr) => { $reserved };
    (@reserved) => { &[] };
}

named!(XdpMode, "xdp_mode", ["native" => XdpMode::Native, "generic" => XdpMode::Generic, "auto" => XdpMode::Auto]);
named!(Protocol, "protocol", ["tcp" => Protocol::Tcp, "udp" => Protocol::Udp]);
named!(Forwarding, "forwarding", ["dsr" => Forwarding::Dsr, "ipip" => Forwarding::Ipip]);
named!(Scheduler, "scheduler", [
    "maglev" => Scheduler::Maglev,
    "rr" => Scheduler::RoundRobin,
    "wrr" => Scheduler::WeightedRoundRobin,
    "lc" => Scheduler::LeastConn,
    "wlc" => Scheduler::WeightedLeastConn,
    "source-hash" => Scheduler::SourceHash,
]);
named!(BackendState, "state", ["active" => BackendState::Active, "draining" => BackendState::Draining]);
named!(LoadSource, "source", ["prometheus" => LoadSource::Prometheus, "agent" => LoadSource::Agent]);
named!(InFlight, "in_flight", ["reported" => InFlight::Reported, "connections" => InFlight::Connections]);
named!(Preset, "preset", [
    "vllm" => Preset::Vllm,
    "tgi" => Preset::Tgi,
    "sglang" => Preset::Sglang,
    "triton" => Preset::Triton,
]);
named!(OnDown, "on_down", ["reassign" => OnDown::Reassign, "keep" => OnDown::Keep]);
named!(CheckKind, "check", ["tcp" => CheckKind::Tcp, "http" => CheckKind::Http, "udp" => CheckKind::Udp, "none" => CheckKind::None]);
