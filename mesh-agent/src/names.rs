//! Names bound to addresses. A DNS name in policy (an egress entry, an
//! `mcp`, `llm` or `a2a` address, a `tls.terminate` entry) is something the
//! agent claims, in its SNI or Host; the address it connects to is what the
//! kernel saw. A name decides only when it resolves to that address: else an
//! agent allowed `api.example` could reach any address by naming it.
//!
//! Resolution: the config's static `hosts:` map when it names the host (air
//! gapped hosts, tests), else the system resolver, cached for a short while
//! (positive and negative) and bounded in size. A lookup that fails or times
//! out binds nothing: fail closed.
use std::{
    collections::HashMap,
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Instant,
};

use crate::config::{NAME_CACHE_MAX, NAME_CACHE_TTL, NAME_LOOKUP_TIMEOUT, NAME_NEGATIVE_TTL};

/// Looks a host name up (the system resolver in the daemon).
pub trait Resolve: Send + Sync {
    fn lookup(&self, name: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system resolver (getaddrinfo, on tokio's blocking pool).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup(&self, name: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        let name = name.to_owned();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

struct Cached {
    addrs: Arc<[IpAddr]>,
    until: Instant,
}

/// Whether a name binds to an address.
pub struct Names {
    hosts: HashMap<String, Vec<IpAddr>>,
    resolver: Arc<dyn Resolve>,
    cache: Mutex<HashMap<Box<str>, Cached>>,
}

/// Why a name does not bind to the address connected to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unbound {
    #[error("server name {name:?} does not resolve to {ip} (it resolves to {resolved})")]
    Elsewhere {
        name: String,
        ip: IpAddr,
        resolved: String,
    },
    #[error("server name {name:?} could not be resolved ({why}), so it cannot vouch for {ip}")]
    Unresolved {
        name: String,
        ip: IpAddr,
        why: String,
    },
}

impl Names {
    /// `hosts`: the static map (names lower case, without a trailing dot).
    pub fn new(hosts: HashMap<String, Vec<IpAddr>>, resolver: Arc<dyn Resolve>) -> Names {
        Names {
            hosts,
            resolver,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Ok when `name` resolves to `ip` (v4-mapped IPv6 compared as IPv4).
    pub async fn binds(&self, name: &str, ip: IpAddr) -> Result<(), Unbound> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let ip = canonical(ip);
        let addrs = match self.hosts.get(&name) {
            Some(addrs) => Arc::from(addrs.as_slice()),
            None => self
                .resolve(&name)
                .await
                .map_err(|why| Unbound::Unresolved {
                    name: name.clone(),
                    ip,
                    why,
                })?,
        };
        if addrs.iter().any(|a| canonical(*a) == ip) {
            return Ok(());
        }
        let resolved = addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Err(Unbound::Elsewhere {
            name,
            ip,
            resolved: if resolved.is_empty() {
                "nothing".into()
            } else {
                resolved
            },
        })
    }

    async fn resolve(&self, name: &str) -> Result<Arc<[IpAddr]>, String> {
        let now = Instant::now();
        if let Some(hit) = self.lock().get(name).filter(|c| c.until > now) {
            return if hit.addrs.is_empty() {
                Err("no address (cached)".into())
            } else {
                Ok(hit.addrs.clone())
            };
        }
        let looked_up = tokio::time::timeout(NAME_LOOKUP_TIMEOUT, self.resolver.lookup(name)).await;
        let (addrs, ttl, result) = match looked_up {
            Ok(Ok(addrs)) if !addrs.is_empty() => {
                let addrs: Arc<[IpAddr]> = addrs.into();
                (addrs.clone(), NAME_CACHE_TTL, Ok(addrs))
            }
            Ok(Ok(_)) => (
                Arc::from([]),
                NAME_NEGATIVE_TTL,
                Err("no address".to_owned()),
            ),
            Ok(Err(e)) => (Arc::from([]), NAME_NEGATIVE_TTL, Err(e.to_string())),
            Err(_) => (
                Arc::from([]),
                NAME_NEGATIVE_TTL,
                Err(format!("no answer within {NAME_LOOKUP_TIMEOUT:?}")),
            ),
        };
        let mut cache = self.lock();
        if cache.len() >= NAME_CACHE_MAX {
            // Agents choose the names: expired ones go first, then all.
            cache.retain(|_, c| c.until > now);
            if cache.len() >= NAME_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(
            name.into(),
            Cached {
                addrs,
                until: now + ttl,
            },
        );
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Answers from a fixed table and counts lookups.
    struct Table(HashMap<&'static str, Vec<IpAddr>>, AtomicUsize);

    impl Resolve for Table {
        fn lookup(
            &self,
            name: &str,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            let answer = self
                .0
                .get(name)
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"));
            Box::pin(async move { answer })
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn a_name_binds_only_to_the_addresses_it_resolves_to() {
        let table = Arc::new(Table(
            HashMap::from([("api.example", vec![ip("127.0.0.7"), ip("::1")])]),
            AtomicUsize::new(0),
        ));
        let names = Names::new(HashMap::new(), table.clone());
        assert_eq!(names.binds("API.example.", ip("127.0.0.7")).await, Ok(()));
        assert_eq!(
            names.binds("api.example", ip("::ffff:127.0.0.7")).await,
            Ok(())
        );
        assert_eq!(names.binds("api.example", ip("::1")).await, Ok(()));
        let spoofed = names
            .binds("api.example", ip("127.0.0.8"))
            .await
            .unwrap_err();
        assert!(spoofed.to_string().contains("127.0.0.7"), "{spoofed}");
        // One lookup served all of these.
        assert_eq!(table.1.load(Ordering::SeqCst), 1);
        // An unknown name binds nothing, and the miss is cached too.
        assert!(matches!(
            names.binds("nowhere.example", ip("127.0.0.7")).await,
            Err(Unbound::Unresolved { .. })
        ));
        let _ = names.binds("nowhere.example", ip("127.0.0.7")).await;
        assert_eq!(table.1.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_static_hosts_map_answers_for_the_names_it_holds() {
        let table = Arc::new(Table(
            HashMap::from([("api.example", vec![ip("10.9.9.9")])]),
            AtomicUsize::new(0),
        ));
        let hosts = HashMap::from([("api.example".to_owned(), vec![ip("127.0.0.9")])]);
        let names = Names::new(hosts, table.clone());
        assert_eq!(names.binds("api.example", ip("127.0.0.9")).await, Ok(()));
        assert!(names.binds("api.example", ip("10.9.9.9")).await.is_err());
        assert_eq!(table.1.load(Ordering::SeqCst), 0);
    }
}
