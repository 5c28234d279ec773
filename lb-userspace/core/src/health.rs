//! What the health checks decide, without probing anything: a backend's [`Health`], the
//! [`Tracker`] that turns consecutive probe results into transitions (`rise`/`fall`), and
//! the [`Event`] the checkers report to the daemon. The checkers themselves (probes through
//! the forwarding path) are the daemon's.

use std::net::IpAddr;

use crate::model::VipIdent;

/// A backend's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Up,
    Down,
}

/// Counts consecutive results and decides transitions.
#[derive(Clone, Debug)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    state: Health,
    /// Consecutive results that disagree with `state`.
    streak: u32,
}

impl Tracker {
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            state: Health::Up,
            streak: 0,
        }
    }

    /// Start from `health` (what a restarted daemon knew) instead of up.
    pub fn start_at(&mut self, health: Health) {
        self.state = health;
        self.streak = 0;
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Record one result; the new state when it changed.
    pub fn observe(&mut self, ok: bool) -> Option<Health> {
        let agrees = matches!((self.state, ok), (Health::Up, true) | (Health::Down, false));
        if agrees {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.state == Health::Up {
            self.fall
        } else {
            self.rise
        };
        if self.streak < needed {
            return None;
        }
        self.streak = 0;
        self.state = if ok { Health::Up } else { Health::Down };
        Some(self.state)
    }
}

/// One probe's outcome and the backend's health after it.
#[derive(Clone, Debug)]
pub struct Event {
    pub vip: VipIdent,
    pub backend: IpAddr,
    pub health: Health,
    /// The last probe's outcome, e.g. "connect: Connection refused" or "HTTP 200".
    pub reason: String,
    /// Whether the check passed; `None` when the event is no check (a restarted daemon's
    /// knowledge).
    pub ok: Option<bool>,
}
