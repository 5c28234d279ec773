//! The measuring loops of `sluice bench packet`: rounds of blocks (the default) or of
//! paired calls, and the back-to-back "warm" figures.

use std::ops::Range;

use anyhow::{Context as _, bail};
use aya::programs::Xdp;
use lb_common::{bench::programs as bench_programs, programs};

use super::{
    Case, Dist, Method, Options, VIPS, WARM_REPEAT, WARM_ROUNDS, Warm,
    cases::{Def, Program, Vary, miss_lines, tcp},
    percentile, round_ratios, stats,
};
use crate::{
    bench::{
        frame::{self, Frame, TCP_ACK},
        run::{self, XDP_TX},
    },
    dataplane::{BenchObject, Dataplane, Sizes, VipIdent},
};

/// The objects the cases run in.
pub(super) struct Tables {
    /// The one-flow cases' (emptied before each case's block).
    pub(super) main: Dataplane,
    /// The current new-flow block's: loaded afresh for each block (see [`Tables::ready`]).
    pub(super) fresh: Option<Dataplane>,
    pub(super) fresh_sizes: Sizes,
    /// The flows a new-flow block inserts (its region is sized for them).
    pub(super) fresh_flows: u64,
    /// One per many-flow case: (its flows, the object holding them).
    pub(super) filled: Vec<(u64, Dataplane)>,
}

impl Tables {
    /// The object a case runs in, ready: the one-flow cases' emptied, a new object for a
    /// new-flow block, or the case's filled one.
    ///
    /// A new-flow block gets an object of its own, a table never written, as in every
    /// round since the kernel's hash maps (whose deleted entries came back on the free list
    /// in hash order, so that an emptied table's inserts took entries at random addresses:
    /// 450–550 ns against 370–450 ns a new flow then).
    fn ready(&mut self, vary: Vary) -> anyhow::Result<&Dataplane> {
        match vary {
            Vary::Cycle(n) => self
                .filled
                .iter()
                .find(|(m, _)| *m == n)
                .map(|(_, dp)| dp)
                .with_context(|| format!("no table filled with {n} flows")),
            Vary::Fixed => {
                self.main.clear_flows().context("emptying the flow table")?;
                Ok(&self.main)
            }
            Vary::Fresh => {
                self.fresh = None;
                let dp = self.fresh.insert(super::load_published(self.fresh_sizes)?);
                // The region a daemon's sweeper grows to for the block's flows.
                dp.fit_flow_region(self.fresh_flows);
                Ok(dp)
            }
        }
    }
}

/// What the rounds measured.
pub(super) struct Measured {
    pub(super) cases: Vec<Case>,
    pub(super) floor_ns: Dist,
    pub(super) floor_round_p50_ns: Vec<u64>,
}

/// Which flow call `j` of a block sends (`None`: the template's own). A block is `warmup`
/// unmeasured calls, then `calls` measured ones. Fresh: the measured calls send flows
/// `0..calls`, the warm-up ones the flows after them (each block has a new table, so
/// rounds may send the same flows again). Cycle: round after round, the flows
/// `0..n` in turn, continuing where the previous round stopped.
pub(super) fn flow_of(vary: Vary, round: u32, j: u64, warmup: u64, calls: u64) -> Option<u64> {
    match vary {
        Vary::Fixed => None,
        Vary::Fresh => Some(if j < warmup { calls + j } else { j - warmup }),
        Vary::Cycle(n) => Some((u64::from(round) * (warmup + calls) + j) % n.max(1)),
    }
}

/// One block's calls: the program measured, and (paired method) the floor run with it.
struct Block<'a> {
    name: &'static str,
    lb: &'a Xdp,
    paired_floor: Option<&'a Xdp>,
    vary: Vary,
    round: u32,
    warmup: u64,
    calls: u64,
    expect: u32,
    md: [u8; 24],
    base: u32,
}

impl Block<'_> {
    /// Run calls `js` on `f`; keep the measured durations in `out` (the program's, and
    /// the paired floor's) when given.
    fn run(
        &self,
        f: &mut Frame,
        js: Range<u64>,
        mut out: Option<(&mut Vec<u64>, &mut Vec<u64>)>,
    ) -> anyhow::Result<()> {
        for j in js {
            if let Some(k) = flow_of(self.vary, self.round, j, self.warmup, self.calls) {
                let (a, p) = frame::flow_source(self.base, k);
                f.set_source(a, p);
            }
            let Some(floor) = self.paired_floor else {
                let (action, ns) = run::once(self.lb, &f.bytes, &self.md)?;
                self.check(action)?;
                if let Some((ours, _)) = &mut out {
                    ours.push(ns);
                }
                continue;
            };
            // Alternate which program runs first, so neither always finds the caches warm.
            let lb_first = j.is_multiple_of(2);
            let (first, second) = if lb_first {
                (self.lb, floor)
            } else {
                (floor, self.lb)
            };
            let r1 = run::once(first, &f.bytes, &self.md)?;
            let r2 = run::once(second, &f.bytes, &self.md)?;
            let ((la, lt), (fa, ft)) = if lb_first { (r1, r2) } else { (r2, r1) };
            self.check(la)?;
            if fa != XDP_TX {
                bail!("floor returned {}", run::action_name(fa));
            }
            if let Some((ours, theirs)) = &mut out {
                ours.push(lt);
                theirs.push(ft);
            }
        }
        Ok(())
    }

    fn check(&self, action: u32) -> anyhow::Result<()> {
        if action != self.expect {
            bail!(
                "{}: returned {} instead of {}",
                self.name,
                run::action_name(action),
                run::action_name(self.expect)
            );
        }
        Ok(())
    }
}

/// A case's measurements, round after round.
#[derive(Default)]
struct Acc {
    samples: Vec<u64>,
    floor: Vec<u64>,
    round_p50: Vec<u64>,
    round_floor_p50: Vec<u64>,
    new_flows: u64,
    flows_in_table: u64,
}

fn new_flows(dp: &Dataplane, vip: Option<VipIdent>) -> anyhow::Result<u64> {
    let Some(v) = vip else { return Ok(0) };
    let id = dp
        .layout()
        .vip(&v)
        .with_context(|| format!("VIP {v} not published"))?
        .vip_id;
    Ok(dp.vip_counters(id)?.new_flows)
}

/// Measure every case, `opts.rounds` times, with `opts.method`.
pub(super) fn run(
    tables: &mut Tables,
    bo: &mut BenchObject,
    defs: &[Def],
    opts: &Options,
    ifindex: u32,
) -> anyhow::Result<Measured> {
    let (warmup, calls) = (u64::from(opts.warmup), u64::from(opts.calls));
    let paired = opts.method == Method::Paired;
    let all = (calls * u64::from(opts.rounds)) as usize;
    let mut accs: Vec<Acc> = defs
        .iter()
        .map(|_| Acc {
            samples: Vec::with_capacity(all),
            ..Acc::default()
        })
        .collect();
    let mut floor_all = Vec::with_capacity(all);
    let mut floor_rounds = Vec::new();
    for round in 0..opts.rounds {
        // Block method: the floor's block opens the round (on the one-flow TCP frame).
        let floor_p50 = if paired {
            None
        } else {
            let floor = run::xdp(bo.ebpf(), bench_programs::FLOOR_TX)?;
            let mut f = tcp(VIPS.tcp, TCP_ACK);
            let b = Block {
                name: "floor",
                lb: floor,
                paired_floor: None,
                vary: Vary::Fixed,
                round,
                warmup,
                calls,
                expect: XDP_TX,
                md: run::xdp_md(f.bytes.len(), ifindex),
                base: 0,
            };
            let mut s = Vec::with_capacity(calls as usize);
            b.run(&mut f, 0..warmup, None)?;
            b.run(
                &mut f,
                warmup..warmup + calls,
                Some((&mut s, &mut Vec::new())),
            )?;
            s.sort_unstable();
            let p50 = percentile(&s, 50);
            tracing::info!(round, p50, "floor");
            floor_rounds.push(p50);
            floor_all.append(&mut s);
            Some(p50)
        };
        for (def, acc) in defs.iter().zip(&mut accs) {
            let dp = tables.ready(def.vary)?;
            // The memory floor's reads start from its first flow each round, as many
            // lines as the case of its flows has in its region.
            if let Program::MemoryFloor { flows } = def.program {
                let n = u32::try_from(flows).unwrap_or(u32::MAX);
                super::set_miss_state(bo, miss_lines(opts, flows), n, 0)?;
            }
            // (The handles are taken after the state is set: setting it borrows `bo`. The
            // floor's only for the paired method: the block method ran it above.)
            let paired_floor = if paired {
                Some(run::xdp(bo.ebpf(), bench_programs::FLOOR_TX)?)
            } else {
                None
            };
            let lb = match def.program {
                Program::Balancer => run::xdp(dp.ebpf(), programs::BALANCER)?,
                Program::MemoryFloor { .. } => run::xdp(bo.ebpf(), bench_programs::FLOOR_MISS)?,
            };
            let mut f = def.template.clone();
            let b = Block {
                name: def.name,
                lb,
                paired_floor,
                vary: def.vary,
                round,
                warmup,
                calls,
                expect: def.expect,
                md: run::xdp_md(f.bytes.len(), ifindex),
                base: super::base_of(&f),
            };
            b.run(&mut f, 0..warmup, None)?;
            if round == 0 {
                acc.flows_in_table = match (def.program, def.vary) {
                    (Program::MemoryFloor { flows }, _) => flows,
                    (_, Vary::Cycle(n)) => n,
                    (_, Vary::Fixed | Vary::Fresh) => dp.flow_count() as u64,
                };
            }
            let opened = new_flows(dp, def.vip)?;
            let mut ours = Vec::with_capacity(calls as usize);
            let mut theirs = Vec::with_capacity(if paired { calls as usize } else { 0 });
            b.run(
                &mut f,
                warmup..warmup + calls,
                Some((&mut ours, &mut theirs)),
            )?;
            acc.new_flows += new_flows(dp, def.vip)? - opened;
            ours.sort_unstable();
            theirs.sort_unstable();
            let p50 = percentile(&ours, 50);
            let fp50 = floor_p50.unwrap_or_else(|| percentile(&theirs, 50));
            tracing::info!(
                round,
                case = def.name,
                p50,
                ratio = p50 as f64 / fp50.max(1) as f64,
                "measured"
            );
            acc.round_p50.push(p50);
            acc.round_floor_p50.push(fp50);
            acc.samples.append(&mut ours);
            floor_all.extend_from_slice(&theirs);
            acc.floor.append(&mut theirs);
        }
    }
    let floor_ns = Dist::of(&mut floor_all);
    let floor = run::xdp(bo.ebpf(), bench_programs::FLOOR_TX)?;
    let mut cases = Vec::with_capacity(defs.len());
    for (def, mut acc) in defs.iter().zip(accs) {
        let warm = warm_figures(tables, floor, def, ifindex)?;
        let round_ratios = round_ratios(&acc.round_p50, &acc.round_floor_p50);
        let ratio = stats::median(&round_ratios);
        let target = if paired { None } else { def.target };
        let fresh = matches!(def.vary, Vary::Fresh);
        let expect_new = if fresh {
            calls * u64::from(opts.rounds)
        } else {
            0
        };
        if acc.new_flows != expect_new {
            tracing::warn!(
                case = def.name,
                opened = acc.new_flows,
                expected = expect_new,
                "flows opened while measuring"
            );
        }
        cases.push(Case {
            name: def.name,
            label: def.label.clone(),
            verdict: run::action_name(def.expect),
            flows_in_table: acc.flows_in_table,
            calls: calls * u64::from(opts.rounds),
            rounds: opts.rounds,
            sluice_ns: Dist::of(&mut acc.samples),
            floor_ns: if paired {
                Dist::of(&mut acc.floor)
            } else {
                floor_ns.clone()
            },
            round_p50_ns: acc.round_p50,
            round_floor_p50_ns: acc.round_floor_p50,
            round_ratios,
            ratio,
            target,
            met: target.map(|t| ratio <= t),
            fresh,
            new_flows: acc.new_flows,
            warm,
        });
    }
    Ok(Measured {
        cases,
        floor_ns,
        floor_round_p50_ns: floor_rounds,
    })
}

/// The back-to-back figures of a one-flow case whose frame a run leaves parseable the
/// same way (see [`Case::warm`]); its flow opened first.
fn warm_figures(
    tables: &mut Tables,
    floor: &Xdp,
    def: &Def,
    ifindex: u32,
) -> anyhow::Result<Option<Warm>> {
    let encap = def.vip.is_some_and(|v| v == VIPS.ipip || v == VIPS.ip6ip6);
    if !matches!(def.vary, Vary::Fixed) || encap || def.program != Program::Balancer {
        return Ok(None);
    }
    let dp = tables.ready(def.vary)?;
    let lb = run::xdp(dp.ebpf(), programs::BALANCER)?;
    let md = run::xdp_md(def.template.bytes.len(), ifindex);
    for _ in 0..10 {
        run::once(lb, &def.template.bytes, &md)?;
    }
    back_to_back(lb, floor, &def.template.bytes, &md).map(Some)
}

/// Back-to-back runs of one frame (see [`Case::warm`]), alternating the two programs.
fn back_to_back(lb: &Xdp, floor: &Xdp, frame: &[u8], md: &[u8; 24]) -> anyhow::Result<Warm> {
    use aya::programs::{TestRun as _, TestRunOptions};
    let avg = |p: &Xdp| -> anyhow::Result<f64> {
        let r = p.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&md[..]),
            repeat: WARM_REPEAT,
            ..TestRunOptions::default()
        })?;
        Ok(r.duration.as_nanos() as f64)
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..WARM_ROUNDS {
        a.push(avg(lb)?);
        b.push(avg(floor)?);
    }
    let (sluice_ns, floor_ns) = (stats::median(&a), stats::median(&b));
    Ok(Warm {
        sluice_ns,
        floor_ns,
        ratio: sluice_ns / floor_ns.max(1.0),
    })
}
