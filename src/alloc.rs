//! The binary's global allocator: mimalloc through its C API, tuned to return freed memory.

/// mimalloc instead of glibc's malloc: the push path allocates many small, short-lived objects
/// from the runtime threads; glibc's per-thread arenas fragmented (far more resident than the
/// store holds) and its malloc/free took a large share of a push's CPU (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// The global allocator over mimalloc's C API. Unlike the `mimalloc` crate, which sends every
/// request through `mi_malloc_aligned` (a generic aligned path that is measurable on every
/// push), requests whose alignment mimalloc's natural alignment already gives use the plain
/// entry points.
struct MiMalloc;

/// Every block `mi_malloc` returns is aligned to this (MI_MAX_ALIGN_SIZE) or to its size,
/// whichever is smaller; Rust layouts have sizes that are multiples of their alignment.
const NATURAL_ALIGN: usize = 16;

fn natural(layout: std::alloc::Layout) -> bool {
    layout.align() <= NATURAL_ALIGN && layout.align() <= layout.size()
}

// SAFETY: every method forwards to the mimalloc function with the same contract; blocks from
// either entry point are freed and resized by mi_free / mi_realloc(_aligned), which accept
// both, and the aligned variants are used whenever the natural alignment does not suffice.
unsafe impl std::alloc::GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if natural(layout) {
            unsafe { libmimalloc_sys::mi_malloc(layout.size()).cast() }
        } else {
            unsafe { libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast() }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if natural(layout) {
            unsafe { libmimalloc_sys::mi_zalloc(layout.size()).cast() }
        } else {
            unsafe { libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast() }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // The new layout has the same alignment; natural alignment must hold for the new size.
        if layout.align() <= NATURAL_ALIGN && layout.align() <= new_size {
            unsafe { libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast() }
        } else {
            unsafe {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

/// `mi_option_purge_delay` in the vendored mimalloc v3 (`mimalloc.h`, `mi_option_e`); the Rust
/// bindings name only the v2 options.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// `mi_option_allow_thp`, likewise.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Return freed pages to the OS at once instead of after mimalloc's default delay, unless the
/// operator chose otherwise with `MIMALLOC_PURGE_DELAY`. A scrape of a large store allocates and
/// frees tens of megabytes; with the default delay those pages stay resident after every
/// scrape, and purging them at once costs nothing measurable per push (docs/benchmarks.md).
///
/// Likewise no transparent huge pages, unless `MIMALLOC_ALLOW_THP` says otherwise: with them a
/// 2 MiB region is resident as soon as one byte of it is touched, and a purge of freed pages
/// inside it splits it or keeps it whole, so a node keeps more resident after scrapes, again
/// for no gain per push (docs/benchmarks.md).
pub(crate) fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option; mimalloc reads options at any time and accepts any
        // value for this one (0 = purge at once).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: sets an integer option (0 = mimalloc no longer asks for huge pages on memory
        // it maps from now on).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
        // The option alone is read too late: mimalloc reserved its first arena before `main`,
        // with MADV_HUGEPAGE. The process-wide flag makes the kernel back no region of this
        // process with transparent huge pages from now on. A failure leaves THP as it was.
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory.
        #[cfg(target_os = "linux")]
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0)
        };
    }
}
