//! Interned metric names and help texts, shared by every family that uses them.

use std::sync::Arc;

/// Shares the `Arc<str>` of metric names and help texts between families: many groups pushing
/// the same families then hold one copy of each string instead of one per group.
/// Strings nobody holds any more are swept when the set has doubled since the last sweep.
///
/// Every push interns each family's name and help, from every runtime thread; a small
/// per-thread cache in front of the shared set answers the common case without taking the
/// shared lock. It holds short strings only and is emptied when full, so it keeps at most
/// `LOCAL_MAX` strings per thread alive past their last family.
pub fn intern(s: &str) -> Arc<str> {
    const LOCAL_MAX: usize = 4096;
    const LOCAL_MAX_LEN: usize = 256;
    type LocalSet = std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>;
    thread_local! {
        static LOCAL: std::cell::RefCell<LocalSet> = std::cell::RefCell::new(LocalSet::default());
    }
    if s.len() > LOCAL_MAX_LEN {
        return intern_shared(s);
    }
    LOCAL.with(|cell| {
        if let Some(hit) = cell.borrow().get(s) {
            return hit.clone();
        }
        let shared = intern_shared(s);
        let mut local = cell.borrow_mut();
        if local.len() >= LOCAL_MAX {
            local.clear();
        }
        local.insert(shared.clone());
        shared
    })
}

fn intern_shared(s: &str) -> Arc<str> {
    type SharedSet = std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>;
    static SET: std::sync::LazyLock<parking_lot::Mutex<(SharedSet, usize)>> =
        std::sync::LazyLock::new(|| parking_lot::Mutex::new((SharedSet::default(), 1024)));
    let mut guard = SET.lock();
    let (set, sweep_at) = &mut *guard;
    if let Some(existing) = set.get(s) {
        return existing.clone();
    }
    if set.len() >= *sweep_at {
        set.retain(|a| Arc::strong_count(a) > 1);
        *sweep_at = (set.len() * 2).max(1024);
    }
    let a: Arc<str> = Arc::from(s);
    set.insert(a.clone());
    a
}
