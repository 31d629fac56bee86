//! The parts of a policy the kernel enforces alone: `udp://` egress entries
//! and `ingress.allow` (pure, no privileges).

use super::*;

const HEAD: &str = "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: a\n";

fn load(text: &str) -> Result<PolicySet, String> {
    PolicySet::from_files(&[("p.yaml".to_owned(), text.to_owned())]).map_err(|e| e.to_string())
}

fn set(text: &str) -> PolicySet {
    match load(text) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn udp_entries_go_to_the_kernel_and_never_allow_tcp() {
    let p = set(&format!(
        "{HEAD}egress:\n  allow: [\"udp://127.0.0.53:53\", \"127.0.0.2:80\", \"udp://[::1]\"]\n"
    ));
    assert_eq!(
        p.udp_allow("a"),
        &[
            UdpAllow {
                addr: "::ffff:127.0.0.53".parse().unwrap(),
                prefix_len: 128,
                port: Some(53),
            },
            UdpAllow {
                addr: "::1".parse().unwrap(),
                prefix_len: 128,
                port: None,
            },
        ]
    );
    // A udp:// entry does not let TCP through to the same place...
    let tcp = p.decide_egress("a", "127.0.0.53:53".parse().unwrap(), None);
    assert_eq!(tcp.rule(), "egress.default");
    // ...and TCP entries keep the index they have in the list.
    let tcp = p.decide_egress("a", "127.0.0.2:80".parse().unwrap(), None);
    assert_eq!(tcp.rule(), "egress.allow[1]");
    // No policy, or no udp entries: no UDP at all.
    assert!(p.udp_allow("b").is_empty());
    let default_allow = set(&format!("{HEAD}egress:\n  default: allow\n"));
    assert!(default_allow.udp_allow("a").is_empty());
}

#[test]
fn udp_entries_are_refused_where_the_kernel_cannot_apply_them() {
    let err = load(&format!("{HEAD}egress:\n  deny: [\"udp://10.0.0.0/8\"]\n")).unwrap_err();
    assert_eq!(
        err,
        "p.yaml:5:10: \"udp://10.0.0.0/8\": udp:// entries belong in egress.allow only \
         (UDP is denied unless an egress.allow entry allows it)"
    );
    let err = load(&format!(
        "{HEAD}tls:\n  terminate: [\"udp://10.0.0.1:443\"]\n"
    ))
    .unwrap_err();
    assert!(err.starts_with("p.yaml:5:15: "), "{err}");
    let err = load(&format!(
        "{HEAD}egress:\n  allow: [\"udp://dns.example:53\"]\n"
    ))
    .unwrap_err();
    assert!(
        err.starts_with("p.yaml:5:11: invalid egress entry \"udp://dns.example:53\": a udp:// entry takes an IP address"),
        "{err}"
    );
}

#[test]
fn ingress_ports_are_sorted_and_checked() {
    let p = set(&format!("{HEAD}ingress:\n  allow: [9000, 8080, 9000]\n"));
    assert_eq!(p.ingress_ports("a"), &[8080, 9000]);
    assert!(p.ingress_ports("b").is_empty());
    assert!(set(HEAD).ingress_ports("a").is_empty());
    assert_eq!(
        load(&format!("{HEAD}ingress:\n  allow: [0]\n")).unwrap_err(),
        "p.yaml:5:11: port 0 is out of range: expected a port number, 1-65535"
    );
    assert_eq!(
        load(&format!("{HEAD}ingress:\n  allow: [70000]\n")).unwrap_err(),
        "p.yaml:5:11: port 70000 is out of range: expected a port number, 1-65535"
    );
    let err = load(&format!("{HEAD}ingress:\n  allow: [\"http\"]\n")).unwrap_err();
    assert!(err.starts_with("p.yaml:5:11: "), "{err}");
    let err = load(&format!("{HEAD}ingress:\n  deny: [80]\n")).unwrap_err();
    assert!(err.contains("unknown field `deny`"), "{err}");
}
