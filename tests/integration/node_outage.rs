//! A node that starts while the server is unreachable: its queue holds a job start signed by a
//! key it has not fetched yet. Asserted: it holds the delivery and keeps asking the server for
//! keys instead of refusing it, and once the server is back (on the same address) the job runs
//! and its result arrives; nothing is dead-lettered.

use crate::support;

use fedq::protocol::JobStatus;
use serde_json::json;
use support::eventually;
use support::node::Fed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_waits_for_keys_while_the_server_is_unreachable() {
    let mut fed = Fed::new(Fed::limits()).await;
    let submitted = fed.submit(json!([{"op": "print", "text": "after the outage"}])).await;
    eventually(30, "the job start to wait in the node's queue", || async {
        (fed.app.routed(submitted.task, "job_start").await == 1).then_some(())
    })
    .await;

    fed.app.stop().await;
    fed.start_node().await;
    let node = fed.node.as_ref().unwrap();
    let refused = || node.rejections().iter().map(|(_, n)| n).sum::<u64>();
    eventually(60, "the node to wait for keys (or refuse the job)", || async {
        (node.waits_for_keys() >= 2 || refused() > 0).then_some(())
    })
    .await;
    let refused = refused();
    assert_eq!(refused, 0, "nothing refused while the server was away: {:?}", node.rejections());

    // The server comes back where the node expects it.
    fed.app.config.http.listen = fed.app.addr;
    fed.app.restart().await;
    let result = fed.result(submitted.task).await;
    assert_eq!(result.status, JobStatus::Completed, "{result:?}");
    let dead: i64 =
        fed.app.sql().await.query_one("SELECT count(*) FROM dead_letters", &[]).await.unwrap().get(0);
    assert_eq!(dead, 0);
    fed.cleanup().await;
}
