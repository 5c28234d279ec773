//! Running a program on one synthetic frame through `BPF_PROG_TEST_RUN`: the packet
//! fixtures, `sluice lookup` and the per-packet benchmark all go through here, so they
//! exercise the real program, not a second implementation.

use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp};

use lb_common::{ProbeMeta, programs};

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
/// ingress_ifindex, rx_queue_index, egress_ifindex. `meta` bytes of XDP metadata lead
/// the `len` bytes of input (`data` is their end, `data_meta` 0).
fn xdp_md(meta: usize, len: usize, ingress_ifindex: u32) -> [u8; 24] {
    let mut md = [0u8; 24];
    md[0..4].copy_from_slice(&(meta as u32).to_ne_bytes());
    md[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    md
}

/// The input of a health probe's run: its [`ProbeMeta`] (the XDP metadata the probe
/// program reads its backend from), then the frame.
fn probe_input(frame: &[u8], backend_id: u32) -> Vec<u8> {
    let meta = ProbeMeta { backend_id };
    let mut data = Vec::with_capacity(size_of::<ProbeMeta>() + frame.len());
    data.extend_from_slice(&meta.backend_id.to_ne_bytes());
    data.extend_from_slice(frame);
    data
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
        run_frame(self.program(program)?, program, frame, 0, ingress_ifindex)
    }

    /// Run the health-probe program once on `frame`, aimed at backend slot `backend_id`
    /// (the [`ProbeMeta`] it is run with), as [`Dataplane::run_frame`]: the packet tests'
    /// way to a probe.
    pub fn run_probe(
        &mut self,
        frame: &[u8],
        backend_id: u32,
        ingress_ifindex: u32,
    ) -> Result<RunResult, DataplaneError> {
        let program = programs::PROBE;
        let data = probe_input(frame, backend_id);
        run_frame(
            self.program(program)?,
            program,
            &data,
            size_of::<ProbeMeta>(),
            ingress_ifindex,
        )
    }
}

/// [`Dataplane::run_frame`] for a loaded program of any object. `data` starts with `meta`
/// bytes of XDP metadata (`data_meta..data`) before the frame; the result is the frame
/// alone.
pub(super) fn run_frame(
    prog: &Xdp,
    program: &'static str,
    data: &[u8],
    meta: usize,
    ingress_ifindex: u32,
) -> Result<RunResult, DataplaneError> {
    let mut out = vec![0u8; data.len() + GROWTH];
    let md = xdp_md(meta, data.len(), ingress_ifindex);
    let mut md_out = [0u8; 24];
    let opts = TestRunOptions {
        data_in: Some(data),
        data_out: Some(&mut out),
        ctx_in: (meta != 0 || ingress_ifindex != 0).then_some(&md[..]),
        ctx_out: (meta != 0).then_some(&mut md_out[..]),
        repeat: 1,
        ..TestRunOptions::default()
    };
    let r = prog
        .test_run(opts)
        .map_err(|source| DataplaneError::TestRun { program, source })?;
    out.truncate(r.data_size_out as usize);
    if meta != 0 {
        // The output starts at `data_meta`: the frame at the `data` the context reports.
        let start = u32::from_ne_bytes([md_out[0], md_out[1], md_out[2], md_out[3]]) as usize;
        out.drain(..start.min(out.len()));
    }
    Ok(RunResult {
        action: r.return_value,
        frame: out,
        duration_ns: r.duration.as_nanos() as u64,
    })
}

impl Dataplane {
    /// Send a health probe for real: run the probe program once on `frame`, aimed at
    /// backend slot `backend_id` (the [`ProbeMeta`] it is run with), in live-frames mode
    /// (`BPF_F_TEST_XDP_LIVE_FRAMES`) as if it arrived on `ingress_ifindex`, so an `XDP_TX`
    /// verdict transmits it out of that interface (and `XDP_REDIRECT` out of another).
    /// The kernel copies the metadata with the frame into each live frame's page.
    pub fn inject_probe(
        &mut self,
        frame: &[u8],
        backend_id: u32,
        ingress_ifindex: u32,
    ) -> Result<(), DataplaneError> {
        let program = programs::PROBE;
        let prog = self.program(program)?;
        let data = probe_input(frame, backend_id);
        let md = xdp_md(size_of::<ProbeMeta>(), data.len(), ingress_ifindex);
        let opts = TestRunOptions {
            data_in: Some(&data),
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
