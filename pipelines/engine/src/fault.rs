//! Crashes on purpose, for the fault tests: with `TXGUARD_FAULT=<point>@<epoch>` in the
//! environment the process aborts — as a crash or a SIGKILL would: no destructors, nothing
//! flushed or committed after — the first time the runtime passes `<point>` in an epoch at
//! or after `<epoch>`. The points are the steps of the checkpoint protocol:
//!
//! * `prepared`: every sink has prepared the epoch, no checkpoint file is written yet;
//! * `files`: the checkpoint's state files are written, its manifest is not;
//! * `checkpointed`: the checkpoint is durable, no sink has been told to commit;
//! * `committed:<n>`: sink number `n` (in the pipeline's order of sink tables) has committed
//!   the epoch, the others perhaps not yet.
//!
//! Unset (always, outside tests) it costs one check of a parsed-once value per point.

use std::sync::OnceLock;

/// The environment variable that arms the fault.
pub const ENV: &str = "TXGUARD_FAULT";

struct Armed {
    point: String,
    epoch: u64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(ENV).ok()?;
            let (point, epoch) = spec.split_once('@').unwrap_or((&spec, "0"));
            let Ok(epoch) = epoch.parse() else {
                eprintln!("txguard: {ENV}={spec}: expected POINT@EPOCH; ignored");
                return None;
            };
            Some(Armed {
                point: point.to_string(),
                epoch,
            })
        })
        .as_ref()
}

/// Aborts the process if the armed fault is `point` and `epoch` has reached its epoch.
pub fn point(point: &str, epoch: u64) {
    if let Some(a) = armed()
        && a.point == point
        && epoch >= a.epoch
    {
        eprintln!("txguard: {ENV}: crashing at {point} in epoch {epoch}");
        std::process::abort();
    }
}
