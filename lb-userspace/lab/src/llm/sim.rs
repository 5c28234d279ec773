//! The offline inference comparison (`sluice simulate inference`): a [`Scenario`] replayed
//! on simulated time, without a lab, through the same pieces the real system runs:
//!
//! - each backend is the lab server's engine ([`Engine`], continuous batching, the same
//!   parameters);
//! - the clients behave as the lab's load generator does ([`super::loadgen::run_sessions`]):
//!   each conversation opens one connection (a new flow, which the balancer places) at its
//!   start and sends its turns on it back to back (after the think time), then closes it;
//!   latencies count from each turn's send;
//! - the balancer is sluice's own code: new connections of `maglev` policies land on a
//!   uniformly random slot of a table built by `sluice_core::maglev::build`; those of `lc`
//!   policies follow the sequence of `sluice_core::sched::sequence`, recomputed every
//!   `lc_refresh` from the open connections (or, with load reports, the reported in-flight
//!   requests) as the daemon does; load reports are read from every engine every
//!   `read_interval` (staggered across backends) and turned into weights by
//!   `sluice_core::load::policy::Policy` every `tick`.
//!
//! What it leaves out: network and read latency (zero), the kernel's flow hash (a uniform
//! draw), and failures (none happen).

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    net::IpAddr,
    time::{Duration, Instant},
};

use sluice_core::{
    load::{
        Reading, Report,
        policy::{self, Input, Policy},
    },
    maglev, sched,
};

use super::{
    client::Completion,
    loadgen::{LoadReport, RequestResult, Sessions, SplitMix64},
    model::{Engine, Event},
    scenario::{Balancer, Scenario},
};

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("backend {index}: {source}")]
    Model {
        index: usize,
        source: super::ParamError,
    },
    #[error("the scenario has no backends")]
    NoBackends,
    #[error(transparent)]
    Maglev(#[from] maglev::MaglevError),
    #[error("the simulation did not finish by {0:?} of simulated time")]
    Unfinished(Duration),
}

/// The longest simulated time after the trace's last arrival.
const DRAIN_LIMIT: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, Default)]
struct Request {
    backend: usize,
    sent: u64,
    first: Option<u64>,
    last: u64,
    tokens: u32,
    done: Option<u64>,
    /// Its conversation and turn.
    session: usize,
    turn: usize,
}

/// How new connections are placed now.
enum Chooser {
    Table(Vec<u32>),
    Sequence { seq: Vec<u32>, cursor: usize },
}

struct Sim<'a> {
    s: &'a Scenario,
    balancer: Balancer,
    sessions: &'a Sessions,
    offsets: Vec<usize>,
    /// The backend of each background conversation (`None`: through the balancer).
    pinned: Vec<Option<usize>>,
    /// The backend of each conversation's connection.
    conns: Vec<Option<usize>>,
    engines: Vec<Engine>,
    addresses: Vec<IpAddr>,
    names: Vec<String>,
    requests: Vec<Request>,
    /// (send time, conversation, turn).
    sends: BinaryHeap<Reverse<(u64, usize, usize)>>,
    /// Requests not done yet.
    remaining: usize,
    open_conns: Vec<u64>,
    new_flows: u64,
    lc_last: (u64, u64, f64),
    readings: Vec<Option<(Report, u64)>>,
    next_read: Vec<u64>,
    next_tick: u64,
    next_lc: u64,
    weights: Vec<u32>,
    policy: Policy,
    chooser: Chooser,
    rng: SplitMix64,
    epoch: Instant,
    rebuilds: u64,
}

/// The outcome of one policy on the scenario.
#[derive(Clone, Debug)]
pub struct SimRun {
    pub balancer: Balancer,
    pub report: LoadReport,
    /// Table or sequence rebuilds caused by the load policy.
    pub rebuilds: u64,
}

/// Run `scenario` through `balancer`.
pub fn run(scenario: &Scenario, balancer: Balancer) -> Result<SimRun, SimError> {
    if scenario.backends.is_empty() {
        return Err(SimError::NoBackends);
    }
    for (index, p) in scenario.backends.iter().enumerate() {
        p.validate()
            .map_err(|source| SimError::Model { index, source })?;
    }
    let (sessions, pinned) = combined(scenario);
    let mut sim = Sim::new(scenario, balancer, &sessions, pinned)?;
    sim.run()?;
    Ok(sim.finish())
}

/// The scenario's conversations and its background ones, by start time, and for each
/// the backend it is pinned to (background) or `None` (through the balancer).
fn combined(s: &Scenario) -> (Sessions, Vec<Option<usize>>) {
    let mut all: Vec<(super::loadgen::Session, Option<usize>)> = Sessions::generate(&s.sessions)
        .sessions
        .into_iter()
        .map(|x| (x, None))
        .collect();
    if let Some(bg) = &s.background {
        let b = bg.backend.min(s.backends.len().saturating_sub(1));
        all.extend(
            Sessions::generate(&bg.sessions)
                .sessions
                .into_iter()
                .map(|x| (x, Some(b))),
        );
    }
    all.sort_by_key(|(x, _)| x.at_us);
    let pinned = all.iter().map(|(_, p)| *p).collect();
    let sessions = Sessions {
        sessions: all.into_iter().map(|(x, _)| x).collect(),
    };
    (sessions, pinned)
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl<'a> Sim<'a> {
    fn new(
        s: &'a Scenario,
        balancer: Balancer,
        sessions: &'a Sessions,
        pinned: Vec<Option<usize>>,
    ) -> Result<Self, SimError> {
        let n = s.backends.len();
        let addresses: Vec<IpAddr> = (0..n).map(Scenario::sim_address).collect();
        let interval = us(s.read_interval);
        let mut sim = Self {
            s,
            balancer,
            sessions,
            offsets: sessions.offsets(),
            pinned,
            conns: vec![None; sessions.sessions.len()],
            engines: s.backends.iter().cloned().map(Engine::new).collect(),
            names: addresses.iter().map(ToString::to_string).collect(),
            addresses,
            requests: vec![Request::default(); sessions.requests()],
            remaining: sessions.requests(),
            sends: sessions
                .sessions
                .iter()
                .enumerate()
                .map(|(i, c)| Reverse((c.at_us, i, 0)))
                .collect(),
            open_conns: vec![0; n],

            new_flows: 0,
            lc_last: (0, 0, 0.0),
            readings: vec![None; n],
            next_read: (0..n as u64).map(|i| i * interval / n as u64).collect(),
            next_tick: us(s.tick),
            next_lc: 0,
            weights: vec![s.weight; n],
            policy: Policy::new(s.policy.clone()),
            chooser: Chooser::Table(Vec::new()),
            rng: SplitMix64::new(s.sessions.seed ^ 0x5eed_ba1a),
            epoch: Instant::now(),
            rebuilds: 0,
        };
        sim.rebuild()?;
        Ok(sim)
    }

    fn run(&mut self) -> Result<(), SimError> {
        let last = self.sessions.sessions.last().map_or(0, |r| r.at_us);
        let limit = last + us(DRAIN_LIMIT);
        while self.remaining > 0 {
            let t = self.next_time();
            if t > limit {
                return Err(SimError::Unfinished(Duration::from_micros(limit)));
            }
            for b in 0..self.engines.len() {
                let events = self.engines[b].advance(t);
                self.on_events(&events);
            }
            while let Some(&Reverse((at, session, turn))) = self.sends.peek()
                && at <= t
            {
                self.sends.pop();
                self.send(t, session, turn);
            }
            self.periodic(t)?;
        }
        Ok(())
    }

    fn next_time(&self) -> u64 {
        let engines = self.engines.iter().filter_map(Engine::next_event_at);
        let sends = self.sends.peek().map(|Reverse((at, _, _))| *at);
        let mut t = engines.chain(sends).min().unwrap_or(u64::MAX);
        if self.balancer.reads_load() {
            t = t.min(self.next_tick);
            t = self.next_read.iter().copied().fold(t, u64::min);
        }
        if self.balancer.least_conn() {
            t = t.min(self.next_lc);
        }
        t
    }

    fn on_events(&mut self, events: &[Event]) {
        for e in events {
            match *e {
                Event::Token { id, at, .. } => {
                    let Some(r) = self.requests.get_mut(id as usize) else {
                        continue;
                    };
                    r.first.get_or_insert(at);
                    r.last = at;
                    r.tokens += 1;
                }
                Event::Done { id, at } => {
                    let Some(r) = self.requests.get_mut(id as usize) else {
                        continue;
                    };
                    r.done = Some(at);
                    self.remaining -= 1;
                    let (session, turn) = (r.session, r.turn);
                    if turn + 1 < self.sessions.sessions[session].turns.len() {
                        let think = u64::try_from(self.s.sessions.think.as_micros()).unwrap_or(0);
                        self.sends.push(Reverse((at + think, session, turn + 1)));
                    } else if let Some(b) = self.conns[session].take() {
                        self.open_conns[b] = self.open_conns[b].saturating_sub(1);
                    }
                }
            }
        }
    }

    /// Send `turn` of `session` (opening its connection on the first).
    fn send(&mut self, now: u64, session: usize, turn: usize) {
        let b = match (self.pinned[session], self.conns[session]) {
            (Some(b), _) | (None, Some(b)) => b,
            (None, None) => {
                let b = self.choose();
                self.open_conns[b] += 1;
                self.new_flows += 1;
                self.conns[session] = Some(b);
                b
            }
        };
        let i = self.offsets[session] + turn;
        let req = self.sessions.sessions[session].turns[turn];
        self.requests[i] = Request {
            backend: b,
            sent: now,
            session,
            turn,
            ..Request::default()
        };
        let events =
            self.engines[b].submit(now, i as u64, u64::from(req.prompt_tokens), req.max_tokens);
        self.on_events(&events);
    }

    /// The backend of a new connection.
    fn choose(&mut self) -> usize {
        let id = match &mut self.chooser {
            Chooser::Table(t) => {
                let slot = (self.rng.next_u64() % t.len().max(1) as u64) as usize;
                t.get(slot).copied().unwrap_or(0)
            }
            Chooser::Sequence { seq, cursor } => {
                let id = seq.get(*cursor % seq.len().max(1)).copied().unwrap_or(0);
                *cursor += 1;
                id
            }
        };
        // Ids are index + 1; an empty table (cannot happen: the policy fails open) picks 0.
        (id as usize).saturating_sub(1).min(self.engines.len() - 1)
    }

    fn periodic(&mut self, t: u64) -> Result<(), SimError> {
        if self.balancer.reads_load() {
            let interval = us(self.s.read_interval);
            for b in 0..self.engines.len() {
                if self.next_read[b] <= t {
                    let l = self.engines[b].load();
                    let report = Report {
                        waiting: Some(l.waiting as f64),
                        running: Some(l.running as f64),
                        kv_cache: Some(l.kv_usage),
                        agent: None,
                    };
                    self.readings[b] = Some((report, t));
                    self.next_read[b] += interval;
                }
            }
            if self.next_tick <= t {
                self.next_tick += us(self.s.tick);
                let inputs = self.inputs(t);
                let now = self.epoch + Duration::from_micros(t);
                if let Some(d) = self.policy.update(now, &inputs) {
                    for (b, a) in self.addresses.iter().enumerate() {
                        self.weights[b] = d.weight(*a).unwrap_or(self.s.weight);
                    }
                    self.rebuilds += 1;
                    if !self.balancer.least_conn() {
                        self.rebuild()?;
                    }
                }
            }
        }
        if self.balancer.least_conn() && self.next_lc <= t {
            self.next_lc += us(self.s.lc_refresh);
            self.rebuild()?;
        }
        Ok(())
    }

    fn inputs(&self, t: u64) -> Vec<Input> {
        self.addresses
            .iter()
            .zip(&self.readings)
            .map(|(a, r)| Input {
                address: *a,
                weight: self.s.weight,
                serving: true,
                reading: match r {
                    None => Reading::Never,
                    Some((report, at)) => Reading::Report {
                        report: report.clone(),
                        age: Duration::from_micros(t.saturating_sub(*at)),
                        error: None,
                    },
                },
            })
            .collect()
    }

    /// Recompute the table (maglev) or the sequence (lc) from the current weights, counts
    /// and reports.
    fn rebuild(&mut self) -> Result<(), SimError> {
        let ids = 1..=self.engines.len() as u32;
        if !self.balancer.least_conn() {
            let entries: Vec<maglev::Entry<'_>> = self
                .names
                .iter()
                .zip(&self.weights)
                .zip(ids)
                .map(|((name, weight), id)| maglev::Entry {
                    name,
                    weight: *weight,
                    id,
                })
                .collect();
            self.chooser = Chooser::Table(maglev::build(&entries, self.s.table_size, 0)?);
            return Ok(());
        }
        let t = self.engines.iter().map(Engine::now).max().unwrap_or(0);
        let reported = if self.balancer.reads_load() {
            policy::in_flight(&self.s.policy, &self.inputs(t))
        } else {
            Vec::new()
        };
        let members: Vec<sched::Member> = ids
            .zip(&self.weights)
            .zip(&self.open_conns)
            .zip(&self.addresses)
            .map(|(((id, weight), conns), a)| sched::Member {
                id,
                weight: *weight,
                active: reported
                    .iter()
                    .find(|(r, _)| r == a)
                    .and_then(|(_, n)| *n)
                    .unwrap_or(*conns),
            })
            .collect();
        let eligible = members.iter().filter(|m| m.weight > 0).count();
        let horizon = sched::lc_horizon(self.flow_rate(t), eligible);
        let seq = sched::sequence(
            sched::Order::LeastConn,
            &members,
            self.s.table_size,
            horizon,
        );
        self.chooser = Chooser::Sequence { seq, cursor: 0 };
        Ok(())
    }

    /// The recent new-flow rate (per second), updated at most every 100 ms as the
    /// data plane does.
    fn flow_rate(&mut self, t: u64) -> f64 {
        let (at, n, rate) = self.lc_last;
        // (The data plane starts from its first look at the counters; this from time 0.)
        let dt = t.saturating_sub(at) as f64 / 1e6;
        if dt < 0.1 {
            return rate;
        }
        let fresh = self.new_flows.saturating_sub(n) as f64 / dt;
        // Smoothed as the data plane does.
        let rate = 0.5 * fresh + 0.5 * rate;
        self.lc_last = (t, self.new_flows, rate);
        rate
    }

    fn finish(self) -> SimRun {
        let end = self
            .requests
            .iter()
            .filter_map(|r| r.done)
            .max()
            .unwrap_or(0);
        let results = self
            .requests
            .iter()
            .filter(|r| self.pinned[r.session].is_none())
            .enumerate()
            .map(|(index, r)| {
                let due = r.sent;
                let first = r.first.unwrap_or(due);
                let done = r.done.unwrap_or(first);
                let itl = if r.tokens > 1 {
                    Duration::from_micros((r.last - first) / u64::from(r.tokens - 1))
                } else {
                    Duration::ZERO
                };
                RequestResult {
                    index,
                    max_tokens: self.sessions.sessions[r.session].turns[r.turn].max_tokens,
                    completion: Completion {
                        tokens: r.tokens,
                        done: r.done.is_some(),
                        ttft: Duration::from_micros(first.saturating_sub(due)),
                        total: Duration::from_micros(done.saturating_sub(due)),
                        mean_itl: itl,
                        backend: Some(self.names[r.backend].clone()),
                    },
                    error: None,
                }
            })
            .collect();
        SimRun {
            balancer: self.balancer,
            report: LoadReport {
                results,
                wall: Duration::from_micros(end),
            },
            rebuilds: self.rebuilds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Scenario {
        let mut s = Scenario::default();
        s.sessions.sessions = 100;
        s
    }

    #[test]
    fn every_request_completes_with_its_tokens() {
        let s = small();
        for b in Balancer::ALL {
            let r = run(&s, b).expect("a run");
            let sum = r.report.summary();
            assert_eq!(
                sum.requests,
                Sessions::generate(&s.sessions).requests(),
                "{b}"
            );
            assert_eq!(sum.failures, 0, "{b}");
            for res in &r.report.results {
                assert_eq!(res.completion.tokens, res.max_tokens, "{b}");
                assert!(res.completion.ttft <= res.completion.total);
            }
            assert_eq!(
                sum.by_backend.len(),
                4,
                "{b}: every backend served: {sum:?}"
            );
        }
    }

    #[test]
    fn the_same_scenario_gives_the_same_figures() {
        let s = small();
        let a = run(&s, Balancer::MaglevLoad)
            .expect("a run")
            .report
            .summary();
        let b = run(&s, Balancer::MaglevLoad)
            .expect("a run")
            .report
            .summary();
        assert_eq!(a, b);
    }

    #[test]
    fn static_maglev_overloads_the_slow_backend_and_load_reports_relieve_it() {
        let s = Scenario::default();
        let fig = |b| run(&s, b).expect("a run").report.summary();
        let stat = fig(Balancer::Maglev);
        let load = fig(Balancer::MaglevLoad);
        // Equal weights send the half-speed GPU a quarter of the connections; its queue
        // grows and its requests wait. The load policy sees the queue.
        assert!(
            load.ttft.p99 < stat.ttft.p99,
            "static {:?} load {:?}",
            stat.ttft,
            load.ttft
        );
        let slow = Scenario::sim_address(3).to_string();
        let served = |s: &super::super::loadgen::Summary| {
            s.by_backend
                .iter()
                .find(|(n, _)| *n == slow)
                .map_or(0, |(_, n)| *n)
        };
        assert!(served(&load) < served(&stat), "{load:?} {stat:?}");
    }

    #[test]
    fn an_empty_scenario_is_an_error() {
        let s = Scenario {
            backends: Vec::new(),
            ..Scenario::default()
        };
        assert!(matches!(
            run(&s, Balancer::Maglev),
            Err(SimError::NoBackends)
        ));
    }
}
