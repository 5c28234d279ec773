//! Providers: where the autoscaler's backends come from and go back to.
