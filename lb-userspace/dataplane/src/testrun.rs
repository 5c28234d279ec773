//! Running a program on one synthetic frame through `BPF_PROG_TEST_RUN`: the packet
//! fixtures, `sluice lookup` and the per-packet benchmark all go through here, so they
//! exercise the real program, not a second implementation.

use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp};

use super::{Dataplane, DataplaneError};

/// Headroom for encapsulation (an IPv6 header) on top of the input frame.
const GROWTH: usize = 64;

/// The verdict and the frame as the program left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunResult {
    /// `XDP_*` action code.
    pub action: u32,
    pub frame: Vec<u8>,
    /// Kernel-measured run time in nanoseconds.
    pub duration_ns: u64,
}

/// An `xdp_md` as `BPF_PROG_TEST_RUN` takes it: data, data_end, data_meta,
/// ingress_ifindex, rx_queue_index, egress_ifindex.
fn xdp_md(len: usize, ingress_ifindex: u32) -> [u8; 24] {
    let mut md = [0u8; 24];
    md[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    md
}

impl Dataplane {
    /// Run `program` once on `frame`, as if it arrived on `ingress_ifindex` (0: the
    /// current network namespace's loopback).
    pub fn run_frame(
        &mut self,
        program: &'static str,
        frame: &[u8],
        ingress_ifindex: u32,
    ) -> Result<RunResult, DataplaneError> {
        run_frame(self.program(program)?, program, frame, ingress_ifindex)
    }
}

/// [`Dataplane::run_frame`] for a loaded program of any object.
pub(super) fn run_frame(
    prog: &Xdp,
    program: &'static str,
    frame: &[u8],
    ingress_ifindex: u32,
) -> Result<RunResult, DataplaneError> {
    let mut out = vec![0u8; frame.len() + GROWTH];
    let md = xdp_md(frame.len(), ingress_ifindex);
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: (ingress_ifindex != 0).then_some(&md[..]),
        repeat: 1,
        ..TestRunOptions::default()
    };
    let r = prog
        .test_run(opts)
        .map_err(|source| DataplaneError::TestRun { program, source })?;
    out.truncate(r.data_size_out as usize);
    Ok(RunResult {
        action: r.return_value,
        frame: out,
        duration_ns: r.duration.as_nanos() as u64,
    })
}

impl Dataplane {
    /// Send `frame` for real: run `program` on it once in live-frames mode
    /// (`BPF_F_TEST_XDP_LIVE_FRAMES`) as if it arrived on `ingress_ifindex`, so an `XDP_TX`
    /// verdict transmits it out of that interface (and `XDP_REDIRECT` out of another).
    pub fn inject(
        &mut self,
        program: &'static str,
        frame: &[u8],
        ingress_ifindex: u32,
    ) -> Result<(), DataplaneError> {
        let prog = self.program(program)?;
        let md = xdp_md(frame.len(), ingress_ifindex);
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&md[..]),
            repeat: 1,
            attrs: TestRunAttrs::new().xdp_live_frames(1),
            ..TestRunOptions::default()
        };
        prog.test_run(opts)
            .map_err(|source| DataplaneError::TestRun { program, source })?;
        Ok(())
    }
}

impl Dataplane {
    /// A duplicate of a program's file descriptor, for running it (`BPF_PROG_TEST_RUN`) from
    /// another thread while this dataplane publishes (tests of table switches).
    pub fn program_fd(
        &mut self,
        program: &'static str,
    ) -> Result<std::os::fd::OwnedFd, DataplaneError> {
        let prog = self.program(program)?;
        let fd = prog.fd().map_err(|source| DataplaneError::Program {
            name: program,
            source,
        })?;
        std::os::fd::AsFd::as_fd(fd)
            .try_clone_to_owned()
            .map_err(|e| DataplaneError::Mmap(std::io::Error::other(e)))
    }
}
