//! Callbacks from the transaction layer into the routing script: Kamailio's
//! `failure_route`, `branch_route` and `onreply_route`. The script engine implements
//! [`RouteHooks`]; `tm` calls it without knowing the script language.

use sip_msg::{Edits, SipMessage};

use crate::ctx::{MsgCtx, RxInfo, Target};

/// A received reply as seen by a reply route.
pub struct ReplyCtx<'a> {
    /// The reply.
    pub msg: &'a SipMessage,
    /// Where it came from.
    pub rx: RxInfo,
    /// The request it answers (as relayed, before per-branch changes).
    pub req: &'a MsgCtx,
    /// Index of the branch it belongs to.
    pub branch: usize,
}

/// What the failure route sees about why the transaction failed.
#[derive(Clone, Copy, Debug, Default)]
pub struct FailureInfo {
    /// The winning final status of the branches so far (408 for a timeout).
    pub status: u16,
    /// Whether the transaction was cancelled by the caller (CANCEL received).
    pub canceled: bool,
    /// Whether at least one branch ended by a timeout (no final response).
    pub branch_timeout: bool,
    /// Whether any branch got a reply at all.
    pub replied: bool,
}

/// Entry points of the routing script that the transaction layer calls.
pub trait RouteHooks: Send + Sync {
    /// Runs failure route `name` (Kamailio `failure_route[name]`) on the transaction's request
    /// `ctx`, when every branch has a final non-2xx response. The script may add branches and
    /// relay again (serial forking) or reply; `reply` is the winning reply, when one was
    /// received (not for a local 408).
    fn failure_route(
        &self,
        name: &str,
        ctx: &mut MsgCtx,
        info: FailureInfo,
        reply: Option<&SipMessage>,
    );

    /// Runs branch route `name` for one outgoing branch before it is sent. Changes to
    /// `target` and `edits` apply to that branch only. Returns false to drop the branch.
    fn branch_route(
        &self,
        name: &str,
        ctx: &MsgCtx,
        target: &mut Target,
        edits: &mut Edits,
    ) -> bool;

    /// Runs reply route `name` (`onreply_route[name]`, or the global `reply_route` when `name`
    /// is empty) for a reply received on a branch. Returns false to drop the reply (only
    /// provisional replies can be dropped; RFC 3261 §16.7).
    fn reply_route(&self, name: &str, reply: &ReplyCtx<'_>) -> bool;
}

/// Hooks that do nothing (tests, or a server without a script).
pub struct NoRoutes;

impl RouteHooks for NoRoutes {
    fn failure_route(&self, _: &str, _: &mut MsgCtx, _: FailureInfo, _: Option<&SipMessage>) {}
    fn branch_route(&self, _: &str, _: &MsgCtx, _: &mut Target, _: &mut Edits) -> bool {
        true
    }
    fn reply_route(&self, _: &str, _: &ReplyCtx<'_>) -> bool {
        true
    }
}
