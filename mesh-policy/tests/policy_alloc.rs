//! The proxy decides every call; an allowed `tools/call` (deny globs, class,
//! grant, no `when` conditions) must not allocate. A counting global
//! allocator (this test file is its own binary) checks it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use mesh_l7::{Call, Direction, Protocol};
use mesh_policy::{CallContext, Decision, DecisionPoint, ListKind, PolicySet};

struct Counting;

thread_local! {
    // Per thread, so that the test harness's other threads cannot add to
    // the count; const-initialised, so reading them never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (and reallocations) `f` makes on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATIONS.with(Cell::get))
}

const POLICY: &str = r#"
apiVersion: mesh/v1
kind: AgentPolicy
agent: support-bot
egress:
  allow: ["127.0.0.3:9", "127.0.0.2:7001"]
mcp:
  - server: wiki
    address: "127.0.0.3:9"
    tools: { read: ["*"] }
    grant: [read]
  - server: tickets
    address: "127.0.0.2:7001/mcp"
    trust_annotations: true
    tools:
      read: ["get_*", "list_*"]
      write: ["comment_ticket"]
      deny: ["delete_*"]
    grant: [read, write]
    resources: { allow: ["ticket://*"] }
"#;

#[test]
fn allowed_tool_call_decision_does_not_allocate() {
    let files = vec![("p.yaml".to_string(), POLICY.to_string())];
    let policy = match PolicySet::from_files(&files) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let call = Call {
        protocol: Protocol::Mcp,
        direction: Direction::ClientToServer,
        method: "tools/call".into(),
        name: Some("comment_ticket".into()),
        arguments: None,
        id: None,
        session: None,
        version: None,
        mcp: None,
        a2a: None,
        llm: None,
    };
    let ctx = CallContext {
        agent: "support-bot",
        cgroup_id: 1,
        pid: 1,
        uid: 0,
        server: match "127.0.0.2:7001".parse() {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        },
        server_name: None,
        path: "/mcp",
        call: &call,
    };
    // Warm up (lazy statics, if any).
    let _ = policy.decide(&ctx);

    let (decision, count) = allocations(|| policy.decide(&ctx));
    assert_eq!(
        decision,
        Decision::Allow {
            rule: "mcp[tickets].grant.write".into()
        }
    );
    assert_eq!(count, 0, "an allowed tools/call allocated {count} times");

    let (visible, count) = allocations(|| policy.visible(&ctx, ListKind::Tools, "get_ticket"));
    assert!(visible);
    assert_eq!(count, 0, "visible() allocated {count} times");

    // The counter does count: a refusal formats its reason.
    let mut refused_call = call.clone();
    refused_call.name = Some("delete_ticket".into());
    let refused_ctx = CallContext {
        call: &refused_call,
        ..ctx
    };
    let (decision, count) = allocations(|| policy.decide(&refused_ctx));
    assert_eq!(decision.rule(), "mcp[tickets].tools.deny[0]");
    assert!(count > 0, "the counting allocator saw nothing");
}
