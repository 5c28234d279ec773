//! The kernel's packet generator (pktgen) as the traffic source of `sluice bench
//! throughput` (`--generator pktgen`): the design's "benchmark with pktgen in CI VMs".
//!
//! pktgen is driven through `/proc/net/pktgen` of the benchmark's private network
//! namespace (pktgen is per namespace: each has its own `kpktgend_N` threads, one per
//! online CPU, and its own `pgctrl`). The benchmark thread's namespace is not the
//! process's, so the files are reached through `/proc/thread-self/net`, never
//! `/proc/self/net` (the main thread's namespace).
//!
//! One device (the veth toward the load balancer) is added to `kpktgend_<cpu>`, the thread
//! bound to the measured CPU, so generator, veth NAPI and XDP programs share that CPU as
//! with the live-frames generator. Settings that matter on a veth: `clone_skb 0` (a veth
//! hands the skb itself to its peer, so a clone may not be sent again) and no `burst`
//! (pktgen's default, one frame per transmit). Each run has a bounded `count` and is
//! stopped (`stop` to `pgctrl`) at its deadline; the device is always removed from the
//! thread afterwards ([`Session`]'s `Drop`), also on failure.
//!
//! pktgen sends UDP over IPv4 (or IPv6); the flows are its source-port and source-address
//! ranges, which it walks one step per frame. Both steps at once visit every pair of a
//! `ports × addresses` grid only if the two counts are coprime ([`FlowRanges::for_flows`]).

use std::{
    fs::OpenOptions, io::Write as _, net::Ipv4Addr, path::PathBuf, sync::mpsc, time::Duration,
};

use anyhow::{Context as _, bail, ensure};

use crate::config::format_mac;

/// pktgen's directory for the calling thread's network namespace.
pub const PROC_DIR: &str = "/proc/thread-self/net/pktgen";

/// Source ports pktgen may use for one address (as the live-frames generator: 64000
/// ports from 1024).
const MAX_PORTS: u32 = super::frame::PORTS_PER_ADDR;
/// Source addresses: `100.64.0.0/10` holds 2^22.
const MAX_ADDRS: u32 = 1 << 22;

/// How `flows` distinct (source address, source port) pairs come out of pktgen's two
/// ranges, both stepped by one every frame: `ports × addrs = flows` with `ports` and
/// `addrs` coprime, so the pairs repeat only after `flows` frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRanges {
    pub ports: u32,
    pub addrs: u32,
}

impl FlowRanges {
    /// Split `flows` into its prime powers (pairwise coprime); the largest go to the port
    /// range as long as it stays within 64000 ports, the rest to the address range.
    pub fn for_flows(flows: u32) -> anyhow::Result<Self> {
        ensure!(flows > 0, "at least one flow");
        let mut powers = Vec::new();
        let (mut n, mut p) = (flows, 2u32);
        while p.saturating_mul(p) <= n {
            let mut q = 1;
            while n.is_multiple_of(p) {
                n /= p;
                q *= p;
            }
            if q > 1 {
                powers.push(q);
            }
            p += 1;
        }
        if n > 1 {
            powers.push(n);
        }
        powers.sort_unstable_by(|a, b| b.cmp(a));
        let (mut ports, mut addrs) = (1u32, 1u32);
        for q in powers {
            if ports.saturating_mul(q) <= MAX_PORTS {
                ports *= q;
            } else {
                addrs = addrs.saturating_mul(q);
            }
        }
        ensure!(
            addrs <= MAX_ADDRS,
            "{flows} flows need {addrs} source addresses for pktgen (at most {MAX_ADDRS})"
        );
        Ok(Self { ports, addrs })
    }
}

/// What pktgen sends: 60-byte (or `frame_len`) UDP frames from `src` (+ the address range)
/// and `src_port` (+ the port range) to `dst:dst_port`.
#[derive(Clone, Debug)]
pub struct Traffic {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub flows: u32,
    /// Frame length without FCS (pktgen's `pkt_size`).
    pub frame_len: usize,
}

/// The device commands (each one write to `/proc/net/pktgen/<device>`) that make pktgen
/// send `t`; `count` is set per run.
pub fn device_commands(t: &Traffic) -> anyhow::Result<Vec<String>> {
    ensure!(
        (60..=1514).contains(&t.frame_len),
        "pktgen frame length {} out of range (60..=1514)",
        t.frame_len
    );
    let r = FlowRanges::for_flows(t.flows)?;
    let last_addr = u32::from(t.src)
        .checked_add(r.addrs - 1)
        .map(Ipv4Addr::from)
        .with_context(|| format!("{} + {} addresses overflows", t.src, r.addrs))?;
    let port_end = u32::from(t.src_port) + r.ports;
    ensure!(
        port_end <= 65535,
        "source ports {}..{port_end} exceed 65535",
        t.src_port
    );
    Ok(vec![
        // The skb itself goes to the veth peer: never re-send a clone; one per transmit.
        "clone_skb 0".into(),
        format!("pkt_size {}", t.frame_len),
        "delay 0".into(),
        format!("src_mac {}", format_mac(&t.src_mac)),
        format!("dst_mac {}", format_mac(&t.dst_mac)),
        format!("dst {}", t.dst),
        // Inclusive range: addrs addresses.
        format!("src_min {}", t.src),
        format!("src_max {last_addr}"),
        format!("udp_dst_min {}", t.dst_port),
        format!("udp_dst_max {}", t.dst_port),
        // udp_src_max is exclusive: ports source ports.
        format!("udp_src_min {}", t.src_port),
        format!("udp_src_max {port_end}"),
    ])
}

/// What one pktgen run did (its device file after the run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Frames the device accepted (`pkts-sofar`).
    pub sent: u64,
    /// Frames the device refused (`errors`: a full veth ring); not sent.
    pub errors: u64,
    /// pktgen's own time from start to stop, µs.
    pub usec: u64,
}

/// Read the outcome of the last run from the text of `/proc/net/pktgen/<device>`:
///
/// ```text
/// Current:
///      pkts-sofar: 10000  errors: 0
/// ...
/// Result: OK: 1157009(c1096169+d60839) usec, 10000 (60byte,0frags)
/// ```
///
/// A `Result:` that is not a run's (e.g. `OK: count=10000`, the answer to the last
/// setting, if the run never happened) is an error naming it.
pub fn parse_outcome(text: &str) -> anyhow::Result<Outcome> {
    let field = |name: &str| -> anyhow::Result<u64> {
        let rest = text
            .split_once(name)
            .with_context(|| format!("no `{name}` in pktgen's device file"))?
            .1;
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits
            .parse()
            .with_context(|| format!("pktgen's `{name}` is not a number"))
    };
    let result = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Result:"))
        .context("no `Result:` in pktgen's device file")?
        .trim();
    let usec = result
        .strip_prefix("OK:")
        .map(str::trim_start)
        .and_then(|r| r.split_once('('))
        .filter(|(n, rest)| {
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && rest.contains(" usec")
        })
        .and_then(|(n, _)| n.parse().ok())
        .with_context(|| format!("pktgen reported no run: `Result: {result}`"))?;
    Ok(Outcome {
        sent: field("pkts-sofar:")?,
        errors: field("errors:")?,
        usec,
    })
}

/// Write one command to a pktgen file: one `write` call, ending with a newline (`pgctrl`
/// drops the last byte of what it is given, taking it for the newline `echo` adds).
fn put(path: &std::path::Path, command: &str) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(format!("{command}\n").as_bytes())
        .with_context(|| format!("pktgen refused `{command}` in {}", path.display()))
}

/// A device attached to a pktgen thread of the calling thread's network namespace;
/// dropping it removes every device from that thread.
pub struct Session {
    dir: PathBuf,
    thread: String,
    device: String,
    /// [`Session::close`] removed the device already.
    closed: bool,
}

impl Session {
    /// Add `device` to `kpktgend_<cpu>` (of the calling thread's namespace).
    pub fn open(cpu: usize, device: &str) -> anyhow::Result<Self> {
        let dir = PathBuf::from(PROC_DIR);
        let thread = format!("kpktgend_{cpu}");
        ensure!(
            dir.join(&thread).exists(),
            "{} has no {thread} (is CPU {cpu} online, is pktgen loaded?)",
            dir.display()
        );
        put(&dir.join(&thread), &format!("add_device {device}"))?;
        Ok(Self {
            dir,
            thread,
            device: device.to_owned(),
            closed: false,
        })
    }

    pub fn thread(&self) -> &str {
        &self.thread
    }

    fn device_file(&self) -> PathBuf {
        self.dir.join(&self.device)
    }

    /// Apply device settings ([`device_commands`]).
    pub fn apply(&self, commands: &[String]) -> anyhow::Result<()> {
        let f = self.device_file();
        commands.iter().try_for_each(|c| put(&f, c))
    }

    /// Send `count` frames, or as many as pktgen sends until `max` has passed (then it is
    /// stopped); returns when pktgen has stopped.
    pub fn run(&self, count: u64, max: Duration) -> anyhow::Result<Outcome> {
        ensure!(count > 0, "a pktgen run needs a count (0 would be endless)");
        put(&self.device_file(), &format!("count {count}"))?;
        let pgctrl = self.dir.join("pgctrl");
        // `start` blocks until every thread of the namespace has stopped. The writing thread
        // is spawned from this one, so it is in the same network namespace.
        let (done_tx, done) = mpsc::channel();
        let start_ctl = pgctrl.clone();
        std::thread::spawn(move || {
            let _ = done_tx.send(put(&start_ctl, "start"));
        });
        let started = match done.recv_timeout(max) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                put(&pgctrl, "stop")?;
                // pktgen checks its threads every 100 ms.
                done.recv_timeout(Duration::from_secs(10))
                    .map_err(|_| anyhow::anyhow!("pktgen did not stop within 10 s of `stop`"))?
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the pktgen start thread died"),
        };
        started?;
        let f = self.device_file();
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        parse_outcome(&text).with_context(|| format!("{}:\n{text}", f.display()))
    }
}

impl Session {
    /// Remove the device from the thread and wait (bounded: 5 s) until pktgen has let go of
    /// it (its file under `/proc/net/pktgen` disappears).
    fn remove(&self) -> anyhow::Result<()> {
        put(&self.dir.join(&self.thread), "rem_device_all")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.device_file().exists() {
            ensure!(
                std::time::Instant::now() < deadline,
                "pktgen still holds {} 5 s after `rem_device_all` to {}",
                self.device,
                self.thread
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Remove the device from pktgen, checked ([`Drop`] does the same on failure paths,
    /// logging what goes wrong).
    pub fn close(mut self) -> anyhow::Result<()> {
        self.closed = true;
        self.remove()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        if let Err(e) = self.remove() {
            tracing::warn!("removing {} from pktgen: {e:#}", self.device);
        }
    }
}

/// Seconds a pktgen run took by its own clock.
pub fn seconds(o: &Outcome) -> f64 {
    o.usec as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_ranges_are_coprime_and_exact() {
        let cases = [
            (1, 1, 1),
            (1000, 1000, 1),
            (100_000, 3125, 32),
            (64_000, 64_000, 1),
            (65_537, 1, 65_537),
            (1_000_000, 15_625, 64),
        ];
        for (flows, ports, addrs) in cases {
            let r = FlowRanges::for_flows(flows).unwrap();
            assert_eq!((r.ports, r.addrs), (ports, addrs), "{flows} flows");
        }
        // Every pair of the grid is visited once in `flows` frames when both ranges step
        // together (what pktgen does): check it by walking them.
        for flows in [1u32, 6, 1000, 100_000] {
            let r = FlowRanges::for_flows(flows).unwrap();
            let mut seen = std::collections::HashSet::new();
            for i in 0..flows {
                seen.insert((i % r.ports, i % r.addrs));
            }
            assert_eq!(seen.len(), flows as usize, "{flows} flows");
        }
        assert!(FlowRanges::for_flows(0).is_err());
        // A prime above 2^22 fits neither range.
        assert!(FlowRanges::for_flows(4_194_319).is_err());
    }

    fn traffic(flows: u32) -> Traffic {
        Traffic {
            src_mac: [2, 0, 0, 0, 0x0a, 1],
            dst_mac: [2, 0, 0, 0, 0x0a, 2],
            src: Ipv4Addr::new(100, 64, 0, 0),
            dst: Ipv4Addr::new(10, 90, 1, 1),
            src_port: 1024,
            dst_port: 9,
            flows,
            frame_len: 60,
        }
    }

    #[test]
    fn device_script() {
        let c = device_commands(&traffic(100_000)).unwrap();
        assert_eq!(
            c,
            [
                "clone_skb 0",
                "pkt_size 60",
                "delay 0",
                "src_mac 02:00:00:00:0a:01",
                "dst_mac 02:00:00:00:0a:02",
                "dst 10.90.1.1",
                "src_min 100.64.0.0",
                "src_max 100.64.0.31",
                "udp_dst_min 9",
                "udp_dst_max 9",
                "udp_src_min 1024",
                "udp_src_max 4149",
            ]
        );
        assert!(
            !c.iter().any(|x| x.starts_with("burst")),
            "no burst on veth"
        );
        let one = device_commands(&traffic(1)).unwrap();
        assert!(one.contains(&"src_max 100.64.0.0".to_owned()));
        assert!(one.contains(&"udp_src_max 1025".to_owned()));
        let mut t = traffic(1000);
        t.src_port = 65000;
        assert!(device_commands(&t).is_err(), "ports past 65535");
        t = traffic(1);
        t.frame_len = 59;
        assert!(device_commands(&t).is_err());
        t = traffic(65_537);
        t.src = Ipv4Addr::new(255, 255, 255, 0);
        assert!(device_commands(&t).is_err(), "address range overflows");
    }

    const AFTER_RUN: &str = "Params: count 10000  min_pkt_size: 60  max_pkt_size: 60
     frags: 0  delay: 0  clone_skb: 0  ifname: cl0
     flows: 0 flowlen: 0
     queue_map_min: 0  queue_map_max: 0
     dst_min: 10.96.0.100  dst_max: 
     src_min: 10.96.0.2  src_max: 10.96.0.2
     src_mac: 02:96:00:00:00:02 dst_mac: 02:96:00:00:00:01
     udp_src_min: 10000  udp_src_max: 10064  udp_dst_min: 9  udp_dst_max: 9
     src_mac_count: 0  dst_mac_count: 0
     Flags: SHARED  
Current:
     pkts-sofar: 9990  errors: 10
     started: 65469086us  stopped: 66626096us idle: 60839us
     seq_num: 10001  cur_dst_mac_offset: 0  cur_src_mac_offset: 0
     cur_saddr: 10.96.0.2  cur_daddr: 10.96.0.100
     cur_udp_dst: 9  cur_udp_src: 10016
     cur_queue_map: 0
     flows: 0
Result: OK: 1157009(c1096169+d60839) usec, 9990 (60byte,0frags)
  8642pps 4Mb/sec (4148160bps) errors: 10
";

    #[test]
    fn outcome_of_a_run() {
        assert_eq!(
            parse_outcome(AFTER_RUN).unwrap(),
            Outcome {
                sent: 9990,
                errors: 10,
                usec: 1_157_009
            }
        );
        // The answer to the last setting: no run happened.
        let idle = AFTER_RUN.replace(
            "Result: OK: 1157009(c1096169+d60839) usec, 9990 (60byte,0frags)",
            "Result: OK: count=10000",
        );
        let e = parse_outcome(&idle).unwrap_err().to_string();
        assert!(e.contains("no run") && e.contains("count=10000"), "{e}");
        let failed = AFTER_RUN.replace(
            "Result: OK: 1157009(c1096169+d60839) usec, 9990 (60byte,0frags)",
            "Result: ERROR: can not add device tg0",
        );
        assert!(parse_outcome(&failed).is_err());
        assert!(parse_outcome("Result: OK: 5(c4+d1) usec, 3 (60byte,0frags)").is_err());
    }
}
