//! Table switches are atomic: while one thread runs the real balancer on a stream of new
//! flows (through `BPF_PROG_TEST_RUN` on a duplicate of the program's descriptor), the
//! daemon's publish path keeps switching the VIP between backend sets. Every packet must be
//! forwarded to a backend of one of the sets: never dropped for lack of a backend, never
//! sent to a half-written or retired slot.

use std::{
    os::fd::{AsRawFd as _, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
};

use lb_common::{MODE_DSR, PROTO_TCP, programs};
use sluice_dataplane::{Dataplane, Desired, DesiredBackend, DesiredVip, Global, Sizes, VipIdent};
use sluice_tests::{
    frames::{RST, Spec},
    netns::Private,
    require_root,
};

/// `union bpf_attr` as `BPF_PROG_TEST_RUN` reads it.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Run the program once on `frame`; (verdict, output frame).
fn run(fd: &OwnedFd, frame: &[u8], out: &mut [u8]) -> (u32, usize) {
    let mut attr = TestRunAttr {
        prog_fd: fd.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRunAttr::default()
    };
    // SAFETY: a valid attribute block of the size passed, pointing at live buffers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &raw mut attr,
            size_of::<TestRunAttr>(),
        )
    };
    assert_eq!(
        rc,
        0,
        "BPF_PROG_TEST_RUN: {}",
        std::io::Error::last_os_error()
    );
    (attr.retval, attr.data_size_out as usize)
}

fn set(backends: &[u8]) -> Desired {
    Desired {
        global: Global::default(),
        vips: vec![DesiredVip {
            ident: VipIdent {
                address: "10.99.0.10".parse().expect("vip"),
                port: 80,
                proto: PROTO_TCP,
            },
            mode: MODE_DSR,
            scheduler: sluice_dataplane::Sched::Maglev,
            table_size: 4093,
            backends: backends
                .iter()
                .map(|&i| DesiredBackend {
                    address: format!("10.99.1.{i}").parse().expect("backend"),
                    weight: u32::from(i),
                    mac: Some([2, 0, 0, 0, 1, i]),
                    serving: true,
                    in_flight: None,
                })
                .collect(),
        }],
    }
}

#[test]
fn table_switches_are_atomic_under_load() {
    require_root();
    let _ns = Private::enter().expect("a private network namespace");
    let mut dp = Dataplane::load(Sizes {
        flow_entries: 4096,
        table_slots: 1 << 16,
        ..Sizes::default()
    })
    .expect("load the object");
    // Three sets with no backend in common between the first two.
    let sets = [set(&[1, 2]), set(&[3, 4]), set(&[1, 2, 3, 4, 5])];
    dp.publish(&sets[0]).expect("publish the first set");
    let fd = dp
        .program_fd(programs::BALANCER)
        .expect("the balancer's fd");
    let done = AtomicBool::new(false);
    let (sent, bad, switches) = std::thread::scope(|s| {
        let runner = s.spawn(|| {
            let mut out = vec![0u8; 256];
            let (mut sent, mut bad) = (0u64, Vec::new());
            let mut port = 1u16;
            // Resets open no flow: every packet goes through the table being switched.
            while !done.load(Ordering::Relaxed) || sent < 20_000 {
                let frame = Spec::tcp("192.0.2.7", port, "10.99.0.10", 80, RST).build();
                let (verdict, n) = run(&fd, &frame, &mut out);
                let mac = &out[..6.min(n)];
                let known =
                    mac.len() == 6 && mac[..5] == [2, 0, 0, 0, 1] && (1..=5).contains(&mac[5]);
                if verdict != 3 || !known {
                    bad.push((port, verdict, mac.to_vec()));
                }
                sent += 1;
                port = port.wrapping_add(7919) | 1;
                if sent >= 200_000 {
                    break;
                }
            }
            (sent, bad)
        });
        let mut switches = 0;
        for k in 0..300 {
            dp.publish(&sets[k % 3]).expect("publish");
            switches += 1;
        }
        done.store(true, Ordering::Relaxed);
        let (sent, bad) = runner.join().expect("runner");
        (sent, bad, switches)
    });
    println!(
        "{sent} packets during {switches} table switches; {} not forwarded to a live backend",
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "{} bad verdicts, first: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}
