//! Agent names: checked before they reach the kernel's maps, and their
//! fixed-size form in a [`mesh_common::CgroupTag`].
use mesh_common::AGENT_NAME_MAX;

use super::StateError;

pub fn validate_agent_name(name: &str) -> Result<(), StateError> {
    let ok = !name.is_empty()
        && name.len() <= AGENT_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StateError::BadAgentName(name.to_owned()))
    }
}

pub(super) fn encode_name(name: &str) -> [u8; AGENT_NAME_MAX] {
    let mut out = [0u8; AGENT_NAME_MAX];
    out[..name.len()].copy_from_slice(name.as_bytes());
    out
}

pub(super) fn decode_name(raw: &[u8; AGENT_NAME_MAX]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}
