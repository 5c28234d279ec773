//! Providers: where the autoscaler's backends come from and where they go back.
//!
//! The interface is two operations, both asynchronous and both allowed to fail:
//!
//! - [`Provider::acquire`]: produce one new backend ([`Candidate`]: its address, and its
//!   MAC for a DSR VIP when it is known). It need not be serving yet: the autoscaler
//!   probes it (the VIP's health check, against the candidate's own address, `rise`
//!   successes in a row within `ready_timeout_ms`) and only then adds it to the
//!   configuration; a candidate that never passes is released.
//! - [`Provider::release`]: take back a backend the autoscaler no longer needs: after its
//!   drain, once the daemon removed it from the configuration (so no connection is left
//!   on it, or the VIP's drain deadline passed), or a candidate that failed its checks.
//!
//! The autoscaler never asks a provider which backend to remove: it picks the one with
//! the fewest active connections (it knows them; a provider does not) and drains it first.
//!
//! **A Kubernetes provider** fits the same two calls without reshaping anything: `acquire`
//! raises the Deployment's `spec.replicas` by one (a patch to the scale subresource) and
//! watches its EndpointSlices until an endpoint that is `ready` and not yet in use appears,
//! which it returns as the candidate; `release` deletes the pod behind that address (the
//! endpoint's `targetRef`) and lowers `spec.replicas` by one in the same step, so the
//! ReplicaSet does not pick another pod (setting `controller.kubernetes.io/pod-deletion-cost`
//! on the pod first is the alternative when pods must not be deleted directly). Its
//! settings would be a third `provider.kind` (namespace, deployment, port); `kubernetes` is
//! reserved for it in the configuration.

pub mod exec;
pub mod pool;

use std::{future::Future, net::IpAddr, pin::Pin};

use crate::config::autoscale::ProviderConfig;

/// A backend a provider produced.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    pub address: IpAddr,
    /// For DSR VIPs, when the provider knows it (otherwise the kernel resolves it).
    pub mac: Option<[u8; 6]>,
}

/// Why a provider call failed (logged with the VIP and counted).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("no standby address left in the pool")]
    Exhausted,
    #[error("{0}")]
    Command(String),
}

/// The future a provider call returns (boxed so providers are trait objects).
pub type Call<T> = Pin<Box<dyn Future<Output = Result<T, ProviderError>> + Send>>;

/// Where backends come from. `in_use` is every backend address the VIP's configuration
/// holds now (a provider must not hand one of them out again).
pub trait Provider: Send + Sync {
    fn acquire(&self, in_use: &[IpAddr]) -> Call<Candidate>;
    fn release(&self, c: Candidate) -> Call<()>;
    /// Whether `address` is one the provider gave (or may give): only those are ever
    /// scaled in. Fixed backends of the configuration are not.
    fn owns(&self, address: IpAddr) -> bool;
}

/// The provider for a VIP's `[vip.autoscale.provider]`.
pub fn from_config(vip: &str, p: &ProviderConfig) -> Box<dyn Provider> {
    match p {
        ProviderConfig::Pool { standby } => Box::new(pool::Pool::new(standby.clone())),
        ProviderConfig::Exec {
            create,
            destroy,
            timeout_ms,
            retries,
        } => Box::new(exec::Exec::new(
            vip,
            create.clone(),
            destroy.clone(),
            *timeout_ms,
            *retries,
        )),
    }
}
