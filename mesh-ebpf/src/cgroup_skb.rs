//! cgroup_skb ingress/egress: per-cgroup byte counters, and the data-plane
//! half of quarantine (established connections stop both ways).
use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};

use crate::governance;

const PASS: i32 = 1;
const DROP: i32 = 0;

#[cgroup_skb(ingress)]
pub fn mesh_skb_ingress(ctx: SkBuffContext) -> i32 {
    account(&ctx, true)
}

#[cgroup_skb(egress)]
pub fn mesh_skb_egress(ctx: SkBuffContext) -> i32 {
    account(&ctx, false)
}

#[inline(always)]
fn account(ctx: &SkBuffContext, ingress: bool) -> i32 {
    let Some(gov) = governance::of_skb(ctx.skb.skb) else {
        return PASS;
    };
    let len = u64::from(ctx.len());
    let dropped = gov.quarantined;
    governance::count(gov.governing_cgroup_id, |c| {
        if dropped {
            c.packets_dropped += 1;
        } else if ingress {
            c.bytes_in += len;
        } else {
            c.bytes_out += len;
        }
    });
    if dropped {
        DROP
    } else {
        PASS
    }
}
