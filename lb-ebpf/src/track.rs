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
