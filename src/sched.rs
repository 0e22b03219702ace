//! A scheduling hint for the export's threads.
//!
//! A default export goes at the pace of its state.db reader: everything
//! else works on what the reader has read. The other threads (the workers
//! and the sink) sleep and wake often, each time a batch is handed over,
//! and on a machine with few cores a thread that wakes may take its core
//! from the thread that was running, which is most often the reader. Marked
//! as batch work (Linux `SCHED_BATCH`) they no longer preempt it when they
//! wake. They keep their full share of the processor (the priority is
//! unchanged, and the policy is one any thread may take and give up), and
//! they run at once whenever a core is free. Only the order in which ready
//! threads run changes, never what they compute.
//!
//! Elsewhere than Linux the hint does nothing.

/// The calling thread marked as batch work until this is dropped (then its
/// policy is what it was). A thread whose policy is not the ordinary one
/// (already batch, idle or real-time) is left as it is; so is one the
/// system will not change.
#[must_use = "the thread is batch work only while the guard lives"]
pub struct Batch {
    changed: bool,
}

impl Batch {
    pub fn enter() -> Batch {
        Batch {
            changed: imp::set_batch(),
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if self.changed {
            imp::set_ordinary();
        }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    /// Sets the calling thread's policy (pid 0 is the calling thread).
    fn set(policy: libc::c_int) -> bool {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param for the call's duration.
        unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
    }

    /// Ordinary to batch: whether it changed.
    pub fn set_batch() -> bool {
        // SAFETY: no pointers; pid 0 is the calling thread.
        let now = unsafe { libc::sched_getscheduler(0) };
        now == libc::SCHED_OTHER && set(libc::SCHED_BATCH)
    }

    pub fn set_ordinary() {
        set(libc::SCHED_OTHER);
    }

    #[cfg(test)]
    pub fn policy() -> libc::c_int {
        // SAFETY: as above.
        unsafe { libc::sched_getscheduler(0) }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn set_batch() -> bool {
        false
    }

    pub fn set_ordinary() {}
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_batch_work_while_the_guard_lives() {
        // On a thread of its own, so no other test's thread is changed.
        std::thread::spawn(|| {
            assert_eq!(imp::policy(), libc::SCHED_OTHER);
            {
                let _batch = Batch::enter();
                assert_eq!(imp::policy(), libc::SCHED_BATCH);
                // A thread it starts inherits the policy; a nested guard
                // leaves it alone and restores nothing.
                std::thread::spawn(|| assert_eq!(imp::policy(), libc::SCHED_BATCH))
                    .join()
                    .unwrap();
                drop(Batch::enter());
                assert_eq!(imp::policy(), libc::SCHED_BATCH);
            }
            assert_eq!(imp::policy(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }
}
