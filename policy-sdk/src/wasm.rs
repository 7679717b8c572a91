//! The component export behind [`export_policies!`](crate::export_policies).

use crate::Entry;

wit_bindgen::generate!({
    path: "wit",
    world: "policy",
    pub_export_macro: true,
    export_macro_name: "export_component",
    default_bindings_module: "::agyn_policy_sdk::wasm",
});

use agyn::policy::types::Verdict;

/// The policies one component carries.
pub trait Exports {
    const ENTRIES: &'static [Entry];
}

/// Makes a panic's message the policy's error: with `panic = "abort"` the
/// instance traps right after the hook, and the host reports what the hook
/// recorded instead of a bare `unreachable` trap.
fn report_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            agyn::policy::host::report_panic(&info.to_string());
        }))
    });
}

impl<T: Exports> Guest for T {
    fn policies() -> Vec<String> {
        report_panics();
        T::ENTRIES.iter().map(|e| e.name.to_string()).collect()
    }

    fn validate_settings(policy: String, settings: String) -> Result<(), String> {
        report_panics();
        T::ENTRIES
            .iter()
            .find(|e| e.name == policy)
            .ok_or_else(|| format!("this component has no policy named {policy:?}"))?
            .validate_settings(&settings)
    }

    fn evaluate(
        request: String,
        object: String,
        old_object: Option<String>,
        calls: Vec<Call>,
    ) -> Evaluation {
        report_panics();
        let calls: Vec<crate::Call> = calls
            .into_iter()
            .map(|c| crate::Call {
                policy: c.policy,
                settings: c.settings,
                mutate: c.mutate,
            })
            .collect();
        let eval = crate::evaluate(T::ENTRIES, &request, &object, old_object.as_deref(), &calls);
        Evaluation {
            verdicts: eval
                .verdicts
                .into_iter()
                .map(|v| {
                    v.map(|v| Verdict {
                        violations: v.violations,
                        warnings: v.warnings,
                        mutated: v.mutated,
                    })
                })
                .collect(),
            mutated_object: eval.mutated_object,
        }
    }
}

/// The allocator of a policy component: a bump allocator.
///
/// An instance lives for one `evaluate` call and is then thrown away with
/// all its memory, so freeing is wasted work: parsing a pod is thousands of
/// small allocations, and a bump pointer makes each a few instructions.
/// The last allocation can still be freed or grown in place, which covers
/// the `Vec` and `String` building of serialisation. Memory comes from
/// `memory.grow`, so the host's memory cap bounds it like any other.
pub struct BumpAllocator {
    next: core::cell::Cell<usize>,
    end: core::cell::Cell<usize>,
}

// SAFETY: a component instance is single-threaded.
unsafe impl Sync for BumpAllocator {}

const PAGE: usize = 65536;

impl BumpAllocator {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        BumpAllocator {
            next: core::cell::Cell::new(0),
            end: core::cell::Cell::new(0),
        }
    }

    fn bump(&self, size: usize, align: usize) -> Option<usize> {
        if self.end.get() == 0 {
            // First use: the heap starts where the linker put it, inside the
            // initial pages, so a small call never grows memory at all.
            unsafe extern "C" {
                static __heap_base: u8;
            }
            self.next.set(&raw const __heap_base as usize);
            self.end.set(core::arch::wasm32::memory_size(0) * PAGE);
        }
        let start = self.next.get().checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(size)?;
        (end <= self.end.get()).then(|| {
            self.next.set(end);
            start
        })
    }
}

unsafe impl core::alloc::GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        if let Some(ptr) = self.bump(layout.size(), layout.align()) {
            return ptr as *mut u8;
        }
        let pages = (layout.size() + layout.align()).div_ceil(PAGE);
        let previous = core::arch::wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return core::ptr::null_mut();
        }
        // Someone else (wasi-libc's own malloc) may have grown memory since:
        // then the new pages do not follow ours and a new region starts.
        if previous * PAGE != self.end.get() {
            self.next.set(previous * PAGE);
        }
        self.end.set((previous + pages) * PAGE);
        self.bump(layout.size(), layout.align())
            .map_or(core::ptr::null_mut(), |p| p as *mut u8)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        if ptr as usize + layout.size() == self.next.get() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(
        &self,
        ptr: *mut u8,
        layout: core::alloc::Layout,
        new_size: usize,
    ) -> *mut u8 {
        let start = ptr as usize;
        if start + layout.size() == self.next.get() && start + new_size <= self.end.get() {
            self.next.set(start + new_size);
            return ptr;
        }
        // SAFETY: the caller's contract for `realloc` is that of `alloc` plus
        // a valid `ptr` of `layout`; the copy stays within both blocks.
        unsafe {
            let new = self.alloc(core::alloc::Layout::from_size_align_unchecked(
                new_size,
                layout.align(),
            ));
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            }
            new
        }
    }
}
