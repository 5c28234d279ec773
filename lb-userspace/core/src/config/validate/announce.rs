//! `[daemon.announce]`: the routing table, route protocol and interface of the VIP routes.

use super::Cx;
use super::daemon::interface_name_problem;
use crate::config::raw::RawAnnounce;
use crate::config::{
    AnnounceConfig, DEFAULT_ANNOUNCE_INTERFACE, DEFAULT_ANNOUNCE_PROTOCOL, DEFAULT_ANNOUNCE_TABLE,
    RESERVED_ROUTE_PROTOCOLS, RESERVED_ROUTE_TABLES,
};

impl Cx<'_> {
    pub(super) fn announce(&mut self, a: &RawAnnounce) -> Option<AnnounceConfig> {
        let table = self.announce_table(a.table);
        let protocol = self.announce_protocol(a.protocol);
        let interface = self.announce_interface(a.interface.as_deref());
        Some(AnnounceConfig {
            enabled: a.enabled.unwrap_or(false),
            table: table?,
            protocol: protocol?,
            interface: interface?,
        })
    }

    /// `daemon.announce.table`: 1..=2^32-1, not one of the kernel's own tables.
    fn announce_table(&mut self, value: Option<i64>) -> Option<u32> {
        const PATH: &str = "daemon.announce.table";
        let table = self.int(PATH, value, Some(DEFAULT_ANNOUNCE_TABLE), 1..=u32::MAX)?;
        if RESERVED_ROUTE_TABLES.contains(&table) {
            let name = match table {
                255 => "local",
                254 => "main",
                _ => "default",
            };
            self.error(
                PATH,
                format!(
                    "{table} is the kernel's `{name}` table; use a table of sluice's own (not 253, 254 or 255)"
                ),
            );
            return None;
        }
        Some(table)
    }

    /// `daemon.announce.protocol`: 5..=255 (0..=4 are the kernel's own).
    fn announce_protocol(&mut self, value: Option<i64>) -> Option<u8> {
        const PATH: &str = "daemon.announce.protocol";
        let protocol = self.int(PATH, value, Some(DEFAULT_ANNOUNCE_PROTOCOL), 0..=u8::MAX)?;
        if RESERVED_ROUTE_PROTOCOLS.contains(&protocol) {
            self.error(
                PATH,
                format!(
                    "{protocol} is one of the kernel's own route protocols (0 unspec, 1 redirect, 2 kernel, 3 boot, 4 static); use {}..=255",
                    RESERVED_ROUTE_PROTOCOLS.end() + 1
                ),
            );
            return None;
        }
        Some(protocol)
    }

    /// `daemon.announce.interface`: a name Linux accepts (its existence is checked at start).
    fn announce_interface(&mut self, value: Option<&str>) -> Option<String> {
        let name = value.unwrap_or(DEFAULT_ANNOUNCE_INTERFACE);
        match interface_name_problem(name) {
            None => Some(name.to_owned()),
            Some(why) => {
                self.error(
                    "daemon.announce.interface",
                    format!("{name:?} is not a valid interface name: {why}"),
                );
                None
            }
        }
    }
}
