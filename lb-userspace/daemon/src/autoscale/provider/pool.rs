//! `kind = "pool"`: pre-provisioned standby addresses. Acquiring takes the first address
//! that is neither in the configuration nor already handed out; releasing makes it free
//! again. Nothing is started or stopped: the standby backends run all the time.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    sync::{Mutex, PoisonError},
};

use super::{Call, Candidate, Provider, ProviderError};

#[derive(Debug)]
pub struct Pool {
    standby: Vec<IpAddr>,
    /// Handed out and not yet in the configuration (being probed).
    out: Mutex<BTreeSet<IpAddr>>,
}

impl Pool {
    pub fn new(standby: Vec<IpAddr>) -> Self {
        Self {
            standby,
            out: Mutex::new(BTreeSet::new()),
        }
    }

    fn take(&self, in_use: &[IpAddr]) -> Result<Candidate, ProviderError> {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        // Addresses now in the configuration are no longer "out": they joined.
        out.retain(|a| !in_use.contains(a));
        let a = self
            .standby
            .iter()
            .find(|a| !in_use.contains(a) && !out.contains(a))
            .copied()
            .ok_or(ProviderError::Exhausted)?;
        out.insert(a);
        Ok(Candidate {
            address: a,
            mac: None,
        })
    }
}

impl Provider for Pool {
    fn acquire(&self, in_use: &[IpAddr]) -> Call<Candidate> {
        let r = self.take(in_use);
        Box::pin(async move { r })
    }

    fn release(&self, c: Candidate) -> Call<()> {
        self.out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&c.address);
        Box::pin(async { Ok(()) })
    }

    fn owns(&self, address: IpAddr) -> bool {
        self.standby.contains(&address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hands_out_free_addresses_once() {
        let a = |n: u8| IpAddr::from([10, 0, 0, n]);
        let p = Pool::new(vec![a(1), a(2), a(3)]);
        // a(1) is already a backend.
        let c = p.acquire(&[a(1)]).await.unwrap();
        assert_eq!(c.address, a(2));
        assert_eq!(p.acquire(&[a(1)]).await.unwrap().address, a(3));
        assert!(matches!(
            p.acquire(&[a(1)]).await,
            Err(ProviderError::Exhausted)
        ));
        // a(2) is given back: it can be handed out again.
        p.release(c).await.unwrap();
        assert_eq!(p.acquire(&[a(1)]).await.unwrap().address, a(2));
        assert!(p.owns(a(1)) && !p.owns(a(9)));
    }
}
