//! One agent turn through the attempt controller, the way a gateway lane
//! runs it: hold the session only while writing, release it for the model
//! call, and learn whether anyone changed the transcript meanwhile.
//!
//! Run: `cargo run -p sessionlock --example turn -- /tmp/sessions/abc.jsonl`

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sessionlock::attempt::{Attempt, AttemptOptions, CleanupLock};
use sessionlock::classify::OpenClawClassifier;
use sessionlock::transcript::{Durability, Reader};
use sessionlock::{Error, LockOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let session = std::env::args().nth(1).unwrap_or_else(|| {
        std::env::temp_dir()
            .join("sessionlock-example.jsonl")
            .display()
            .to_string()
    });
    let opts = AttemptOptions::default()
        .lock(
            LockOptions::from_env()
                .timeout(Some(Duration::from_secs(10)))
                .lane("channel"),
        )
        .classifier(Arc::new(OpenClawClassifier));

    // Begin: the attempt holds the session lock.
    let attempt = Attempt::begin_file(&session, opts).await?;
    attempt
        .with_write(|t, g| {
            t.append(
                g,
                &[json!({"type": "message", "message": {"role": "user", "content": "hi"}})],
                Durability::Data,
            )
        })
        .await?;

    // The model call: `around_prompt` releases the lock (fence armed) for
    // its duration, so other lanes can write to this session meanwhile, then
    // reacquires it and checks what changed.
    let prompted = attempt.around_prompt(simulated_model_call()).await?;
    match prompted.reacquired {
        Ok(resync) => {
            // Benign entries other lanes appended meanwhile (a delivery
            // mirror, extension state): merge them into the in-memory session.
            for entry in &resync.entries {
                println!("merged: {entry}");
            }
            let reply = prompted.output;
            attempt
                .with_write(|t, g| {
                    t.append(g, &[json!({"type": "message", "message": {"role": "assistant", "content": reply}})], Durability::Data)
                })
                .await?;
        }
        Err(e @ Error::Takeover { .. }) => eprintln!("not writing the reply: {e}"),
        Err(e) => return Err(e),
    }

    // Cleanup always runs; after a takeover it gets a no-op lock.
    if attempt.acquire_for_cleanup().await? == CleanupLock::Held {
        attempt
            .with_write(|t, g| {
                t.append(
                    g,
                    &[json!({"type": "custom", "customType": "turn-done"})],
                    Durability::None,
                )
            })
            .await?;
    }
    attempt.dispose()?;

    for entry in Reader::open(&session)? {
        println!("{}", entry?.value);
    }
    Ok(())
}

async fn simulated_model_call() -> String {
    tokio::time::sleep(Duration::from_millis(50)).await;
    "hello!".to_owned()
}
