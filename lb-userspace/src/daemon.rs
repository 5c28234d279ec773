//! `sluice run`: load, publish the configured state, attach, serve until a signal, detach.

use lb_common::programs;
use tracing::info;

use crate::{
    config::{Config, XdpMode},
    dataplane::{
        AttachMode, Dataplane, DataplaneError, Desired, DesiredBackend, DesiredVip, Global, Sizes,
        VipIdent, neigh,
    },
};

/// The dataplane's desired state for a validated config.
pub fn desired_from(config: &Config) -> Desired {
    let d = &config.daemon;
    Desired {
        global: Global {
            hash_seed: d.hash_seed,
            encap_v4: (d.encap_source_v4.addr(), d.encap_source_v4.prefix_len()),
            encap_v6: (d.encap_source_v6.addr(), d.encap_source_v6.prefix_len()),
        },
        vips: config
            .vips
            .iter()
            .map(|v| DesiredVip {
                ident: VipIdent {
                    address: v.address,
                    port: v.port,
                    proto: v.protocol.ip_proto(),
                },
                mode: v.forwarding.mode(),
                table_size: v.table_size,
                backends: v
                    .backends
                    .iter()
                    .map(|b| DesiredBackend {
                        address: b.address,
                        weight: b.weight,
                        mac: b.mac,
                        serving: true,
                    })
                    .collect(),
            })
            .collect(),
    }
}

pub fn attach_mode(m: XdpMode) -> AttachMode {
    match m {
        XdpMode::Native => AttachMode::Native,
        XdpMode::Generic => AttachMode::Generic,
        XdpMode::Auto => AttachMode::Auto,
    }
}

/// Load the data plane for `config`, publish it and attach the balancer.
pub fn start(config: &Config) -> Result<Dataplane, DataplaneError> {
    let d = &config.daemon;
    let mut dp = Dataplane::load(Sizes {
        flow_entries: d.flow_table_size,
        table_slots: d.table_capacity,
    })?;
    let desired = desired_from(config);
    let report = dp.publish(&desired)?;
    neigh::prime(&neigh::fib_backends(&desired));
    info!(
        vips = report.vips_added,
        backends = report.backends_added,
        tables = report.tables_built,
        build_us = report.build_us,
        "published"
    );
    let mode = dp.attach(programs::BALANCER, &d.interface, attach_mode(d.xdp_mode))?;
    info!(interface = %d.interface, ?mode, "balancer attached");
    Ok(dp)
}
