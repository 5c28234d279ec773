//! What a packet did to its connection: `flow` decides it, `stats` counts it (its own
//! module, so that neither of the two imports the other for it).

/// What one packet did to its connection's tracking state.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// Nothing that changes the active count.
    Same,
    /// The connection opened (new flow, or a SYN reusing a closing flow's 5-tuple).
    Opened,
    /// The first FIN/RST of an open connection.
    Closed,
    /// A new flow whose very first packet is a FIN (opened and closed at once).
    OpenedClosed,
}

impl Track {
    /// A packet's tracking (or `None`: a new flow still to be inserted) as a number, and
    /// back ([`Track::from_code`]): how the balancer hides it from the verifier.
    #[inline(always)]
    pub const fn code(t: Option<Self>) -> u32 {
        match t {
            None => 0,
            Some(Self::Same) => 1,
            Some(Self::Opened) => 2,
            Some(Self::Closed) => 3,
            Some(Self::OpenedClosed) => 4,
        }
    }

    /// See [`Track::code`] (any other number: `OpenedClosed`).
    #[inline(always)]
    pub const fn from_code(c: u32) -> Option<Self> {
        match c {
            0 => None,
            1 => Some(Self::Same),
            2 => Some(Self::Opened),
            3 => Some(Self::Closed),
            _ => Some(Self::OpenedClosed),
        }
    }
}
