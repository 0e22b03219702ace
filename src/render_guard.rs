//! A memory bound on chat-template rendering.
//!
//! Fuel bounds how many instructions a template runs, but a template can
//! double a string in a loop (`{% set ns.s = ns.s ~ ns.s %}`) and reach
//! gigabytes in forty instructions; minijinja has no size limit on
//! concatenation. So the binary's allocator counts what the rendering
//! thread holds while a render runs ([`bounded`]); past
//! [`RENDER_MAX_BYTES`] the run stops at once with a named template error
//! (exit 2) instead of filling memory or aborting. The check happens before
//! the allocation, so nothing is ever allocated past the bound. Only the
//! binary installs [`Guarded`]; elsewhere [`bounded`] just calls `f`.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

/// What one render may hold at once. A real sample renders to a few MB.
pub const RENDER_MAX_BYTES: usize = 1 << 30;

thread_local! {
    /// Bytes this thread may still allocate in the current render, or
    /// `None` outside one.
    static BUDGET: Cell<Option<isize>> = const { Cell::new(None) };
}

/// Runs `f` (one template render) under the memory bound.
pub fn bounded<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(Option<isize>);
    impl Drop for Reset {
        fn drop(&mut self) {
            BUDGET.with(|b| b.set(self.0));
        }
    }
    let _reset = Reset(BUDGET.with(|b| b.replace(Some(RENDER_MAX_BYTES as isize))));
    f()
}

/// Counts `delta` bytes against the current render's budget; stops the
/// process when it runs out.
fn charge(delta: isize) {
    let _ = BUDGET.try_with(|b| {
        if let Some(left) = b.get() {
            let left = left - delta;
            if left < 0 {
                out_of_memory();
            }
            b.set(Some(left));
        }
    });
}

/// Writes the error and exits without allocating (the allocator is the
/// caller).
fn out_of_memory() -> ! {
    const MSG: &[u8] = b"hermes-harvest: the chat template ran out of memory: one render held more than 1024 MB (a template that builds values without bound, e.g. a string doubled in a loop); refusing the template\n";
    // SAFETY: write(2) and _exit(2) take no Rust-managed memory; MSG is static.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::_exit(i32::from(crate::exit::USAGE));
    }
}

/// A global allocator that enforces [`bounded`] on top of `A`.
pub struct Guarded<A>(pub A);

// SAFETY: every call is passed on to `A` unchanged; the budget check only
// reads and writes a thread-local `Cell` (no allocation, no destructor).
unsafe impl<A: GlobalAlloc> GlobalAlloc for Guarded<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size() as isize);
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size() as isize);
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        charge(-(layout.size() as isize));
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        charge(new_size as isize - layout.size() as isize);
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}
