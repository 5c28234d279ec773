//! The benchmarks' own eBPF object (`sluice-bench-ebpf`): the floor (`sluice_floor_tx`), the
//! live-frames traffic generator (`sluice_gen`) and the sink (`sluice_sink`), with their maps
//! (`lb_common::bench::names`). It is apart from the balancer's object, so the balancer
//! loads, verifies and pins only what production runs; the benchmarks load both.

use aya::{Ebpf, EbpfLoader, programs::Xdp};
use lb_common::bench::programs;

use super::{
    AttachMode, Attached, DataplaneError, RunResult,
    attach::{attach_xdp, error_chain},
    raise_memlock_limit, testrun,
};

/// The compiled benchmark object, embedded at build time by `build.rs` (aya-build builds
/// every binary of `lb-ebpf`).
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice-bench-ebpf"));

/// Every program of the benchmark object, loaded (verified) by [`BenchObject::load`].
pub const BENCH_PROGRAMS: &[&str] = &[programs::FLOOR_TX, programs::GEN, programs::SINK];

/// The loaded benchmark object. Programs it attached are detached by
/// [`BenchObject::detach_all`] or when it is dropped; nothing of it is ever pinned.
#[derive(Debug)]
pub struct BenchObject {
    ebpf: Ebpf,
    attached: Vec<Attached>,
}

impl BenchObject {
    /// Load the object and verify every program. Nothing is attached.
    pub fn load() -> Result<Self, DataplaneError> {
        raise_memlock_limit();
        let mut ebpf = EbpfLoader::new().load(BENCH_OBJECT)?;
        for &name in BENCH_PROGRAMS {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::MissingProgram(name))?
                .try_into()
                .map_err(|source| DataplaneError::Program { name, source })?;
            prog.load()
                .map_err(|source| DataplaneError::Program { name, source })?;
        }
        Ok(Self {
            ebpf,
            attached: Vec::new(),
        })
    }

    fn program(&mut self, name: &'static str) -> Result<&mut Xdp, DataplaneError> {
        self.ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingProgram(name))?
            .try_into()
            .map_err(|source| DataplaneError::Program { name, source })
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
        let prog = self.program(program)?;
        let (link, got) = attach_xdp(prog, program, interface, mode)?;
        self.attached.push(Attached {
            program,
            interface: interface.to_owned(),
            mode: got,
            link: Some(link),
        });
        Ok(got)
    }

    /// Detach everything this object attached.
    pub fn detach_all(&mut self) -> Result<(), DataplaneError> {
        while let Some(a) = self.attached.pop() {
            let Some(link) = a.link else { continue };
            let prog = self.program(a.program)?;
            prog.detach(link).map_err(|e| DataplaneError::Attach {
                interface: a.interface.clone(),
                message: format!("detaching {}: {}", a.program, error_chain(&e)),
            })?;
        }
        Ok(())
    }

    /// Run `program` once on `frame`, as [`super::Dataplane::run_frame`] does.
    pub fn run_frame(
        &mut self,
        program: &'static str,
        frame: &[u8],
        ingress_ifindex: u32,
    ) -> Result<RunResult, DataplaneError> {
        testrun::run_frame(self.program(program)?, program, frame, ingress_ifindex)
    }
}
