//! Waiting for a handful of futures at once (writes to every database of a group, reads of
//! every group). The sets are small (a few databases), so every future is polled on each wake.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;

/// A boxed future borrowed for `'a`.
pub(crate) type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs every future concurrently; the results come back in the same order.
pub(crate) async fn join_all<'a, T>(futs: Vec<Fut<'a, T>>) -> Vec<T> {
    let mut futs: Vec<Option<Fut<'a, T>>> = futs.into_iter().map(Some).collect();
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (slot, res) in futs.iter_mut().zip(out.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *res = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_order_of_the_futures() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let v = rt.block_on(join_all(vec![
            Box::pin(async {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                1
            }) as Fut<'_, i32>,
            Box::pin(async { 2 }),
            Box::pin(async {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                3
            }),
        ]));
        assert_eq!(v, vec![1, 2, 3]);
        assert!(rt.block_on(join_all::<i32>(Vec::new())).is_empty());
    }
}
