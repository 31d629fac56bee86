//! A server name the agent sent (SNI, Host) decides egress only when it is
//! bound to the address the agent connected to (`names.rs`): else an agent
//! allowed `api.example` by name could reach any address by naming it.
use super::Proxy;
use crate::{addr::OrigDst, names::Unbound, policy::PolicySet};

/// The rule a name that does not resolve to its destination is refused under.
pub const RULE_NAME_UNBOUND: &str = "egress.name_unbound";

impl Proxy {
    /// Err when `name` would let `agent` through egress by name, but does
    /// not resolve to `dst`. A name no allow entry names decides nothing and
    /// is not looked up.
    pub(crate) async fn vouch(
        &self,
        policy: &PolicySet,
        agent: &str,
        dst: OrigDst,
        name: Option<&str>,
    ) -> Result<(), Unbound> {
        let Some(name) = name else { return Ok(()) };
        let dst = dst.normalized();
        if !policy.name_allows(agent, name, dst.port()) {
            return Ok(());
        }
        self.names.binds(name, dst.ip()).await
    }
}
