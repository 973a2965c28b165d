//! The whole flow, end to end, on the local stack: the same scenario `make run` tells.

use pil_local::stack::{Stack, StackOptions, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripted_night_happens_as_told() {
    let stack = Stack::start(StackOptions::ephemeral(workspace_root()).unwrap())
        .await
        .unwrap();
    let story = pil_local::scenario::run(&stack).await;
    stack.stop().await;
    let story = story.unwrap();
    assert!(story.failures.is_empty(), "{}", story.render());
    assert!(story.lines.len() > 20);
}
