//! The benchmarks' own eBPF object (`sluice-bench-ebpf`): the floor (`sluice_floor_tx`), the
//! memory floor (`sluice_floor_miss`), the live-frames traffic generator (`sluice_gen`) and
//! the sink (`sluice_sink`), with their maps
//! (`lb_common::bench::names`). It is apart from the balancer's object, so the balancer
//! loads, verifies and pins only what production runs; the benchmarks load both.

use aya::{Ebpf, EbpfLoader, programs::Xdp};
use lb_common::bench::{names, programs};

use super::{
    AttachMode, Attached, DataplaneError, RunResult, attach, raise_memlock_limit, testrun,
};

/// The compiled benchmark object, embedded at build time by `build.rs` (aya-build builds
/// every binary of `lb-ebpf`).
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice-bench-ebpf"));

/// Every program of the benchmark object, loaded (verified) by [`BenchObject::load`].
pub const BENCH_PROGRAMS: &[&str] = &[
    programs::FLOOR_TX,
    programs::FLOOR_MISS,
    programs::GEN,
    programs::SINK,
];

/// The loaded benchmark object. Programs it attached are detached by
/// [`BenchObject::detach_all`] or when it is dropped; nothing of it is ever pinned.
#[derive(Debug)]
pub struct BenchObject {
    ebpf: Ebpf,
    attached: Vec<Attached>,
}

impl BenchObject {
    /// Load the object and verify every program. Nothing is attached. The memory floor
    /// has one line (see [`BenchObject::load_with_miss_lines`]).
    pub fn load() -> Result<Self, DataplaneError> {
        Self::load_with_miss_lines(1)
    }

    /// Load the object with `lines` 64-byte lines for the memory floor
    /// (`sluice_floor_miss`; its `MISS_STATE` is for the caller to set).
    pub fn load_with_miss_lines(lines: u32) -> Result<Self, DataplaneError> {
        raise_memlock_limit();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::MISS_LINES, lines)
            .load(BENCH_OBJECT)?;
        attach::load_programs(&mut ebpf, BENCH_PROGRAMS)?;
        Ok(Self {
            ebpf,
            attached: Vec::new(),
        })
    }

    fn program(&mut self, name: &'static str) -> Result<&mut Xdp, DataplaneError> {
        attach::xdp_program(&mut self.ebpf, name)
    }

    /// The loaded object: the benchmarks run its programs with their own lean
    /// `BPF_PROG_TEST_RUN` loop.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The loaded object, mutably: the generator's settings and counters.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Attach `program` to `interface`; detached by [`BenchObject::detach_all`] or on drop.
    pub fn attach(
        &mut self,
        program: &'static str,
        interface: &str,
        mode: AttachMode,
    ) -> Result<AttachMode, DataplaneError> {
        attach::attach_program(&mut self.ebpf, &mut self.attached, program, interface, mode)
    }

    /// Detach everything this object attached.
    pub fn detach_all(&mut self) -> Result<(), DataplaneError> {
        attach::detach_programs(&mut self.ebpf, &mut self.attached)
    }

    /// Run `program` once on `frame`, as [`super::Dataplane::run_frame`] does.
    pub fn run_frame(
        &mut self,
        program: &'static str,
        frame: &[u8],
        ingress_ifindex: u32,
    ) -> Result<RunResult, DataplaneError> {
        testrun::run_frame(self.program(program)?, program, frame, 0, ingress_ifindex)
    }
}
