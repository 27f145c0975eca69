//! The prefix cache: sessions (token list + KV cache) of finished requests,
//! kept so that a later prompt starting with the same tokens (a shared system
//! prompt, the earlier turns of a conversation) skips computing them.
//!
//! # Design
//!
//! The unit of caching is a whole [`Session`], not blocks of KV rows: a
//! finished sequence's session goes into the pool as it is, and a new request
//! takes the pooled session whose tokens share the longest prefix with its
//! prompt, truncates it there and continues ([`Session::prefill`]'s rule). No
//! copying for the common case (the next turn of the same conversation), and no
//! block table in the models. The pool is bounded by bytes of KV cache; the
//! least recently used session is evicted first. The scheduler may also copy a
//! prefix out of a *running* session when that matches better (two requests
//! with the same system prompt arriving together); see `engine.rs`.

use crate::models::KvCache;
use crate::serving::generate::Session;

/// Number of leading tokens `a` and `b` share.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Bytes held by a KV cache (its whole allocation, used or not).
pub fn cache_bytes(c: &KvCache) -> usize {
    c.k.iter().chain(&c.v).map(|v| v.bytes()).sum()
}

/// Bytes held by a session's caches (the main one and the draft layer's).
pub fn session_bytes(s: &Session) -> usize {
    cache_bytes(&s.cache) + s.draft.as_ref().map_or(0, cache_bytes)
}

/// Make `cache` hold at least `capacity` tokens, keeping its contents. The
/// rows of each layer are `[capacity, width]`, so growing appends zeroed rows.
pub fn grow_cache(cache: &mut KvCache, capacity: usize) {
    if capacity <= cache.capacity {
        return;
    }
    for (layer, width) in
        cache.k.iter_mut().map(|l| (l, cache.k_width)).chain(cache.v.iter_mut().map(|l| (l, cache.v_width)))
    {
        layer.grow(capacity * width);
    }
    cache.capacity = capacity;
}

/// Copy the first `n` tokens (and their KV rows) of `src` into `dst`, which
/// must have the same layer shapes and room for them; `dst` then holds exactly
/// those tokens (and the draft rows `src` has of them, where both have a
/// draft cache).
pub fn copy_prefix(src: &Session, dst: &mut Session, n: usize) {
    let n = n.min(src.tokens.len()).min(src.cache.len).min(dst.cache.capacity);
    copy_rows(&src.cache, &mut dst.cache, n);
    if let (Some(s), Some(d)) = (&src.draft, &mut dst.draft) {
        copy_rows(s, d, n.min(s.len));
    }
    dst.tokens.clear();
    dst.tokens.extend_from_slice(&src.tokens[..n]);
}

/// Copy the first `n` rows of `src` into `dst`, which then holds exactly those.
fn copy_rows(src: &KvCache, dst: &mut KvCache, n: usize) {
    let (kw, vw) = (src.k_width, src.v_width);
    assert!(
        (dst.k_width, dst.v_width, dst.k.len()) == (kw, vw, src.k.len()),
        "copy_prefix: caches of different shapes"
    );
    for (d, s) in dst.k.iter_mut().zip(&src.k) {
        d.copy_prefix_from(s, n * kw);
    }
    for (d, s) in dst.v.iter_mut().zip(&src.v) {
        d.copy_prefix_from(s, n * vw);
    }
    dst.len = n;
}

struct Entry {
    session: Session,
    bytes: usize,
    last_used: u64,
}

/// Idle sessions, bounded by bytes, least recently used evicted first.
pub struct SessionPool {
    entries: Vec<Entry>,
    bytes: usize,
    max_bytes: usize,
    clock: u64,
}

impl SessionPool {
    pub fn new(max_bytes: usize) -> SessionPool {
        SessionPool { entries: Vec::new(), bytes: 0, max_bytes, clock: 0 }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of KV cache held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The longest prefix of `prompt` that a pooled session holds.
    pub fn best_match(&self, prompt: &[u32]) -> usize {
        self.entries.iter().map(|e| common_prefix(&e.session.tokens, prompt)).max().unwrap_or(0)
    }

    /// Take out the session sharing the longest prefix with `prompt` (the most
    /// recently used among equals), with the length of that prefix; `None` if
    /// none shares a token.
    pub fn take_best(&mut self, prompt: &[u32]) -> Option<(Session, usize)> {
        let (i, common) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.session.tokens, prompt), e.last_used))
            .filter(|&(_, c, _)| c > 0)
            .max_by_key(|&(_, c, t)| (c, t))
            .map(|(i, c, _)| (i, c))?;
        let e = self.entries.swap_remove(i);
        self.bytes -= e.bytes;
        Some((e.session, common))
    }

    /// Take out the least recently used session (to reuse its memory).
    pub fn take_lru(&mut self) -> Option<Session> {
        let i = self.entries.iter().enumerate().min_by_key(|(_, e)| e.last_used).map(|(i, _)| i)?;
        let e = self.entries.swap_remove(i);
        self.bytes -= e.bytes;
        Some(e.session)
    }

    /// Whether a session of `bytes` more would fit without evicting.
    pub fn has_room_for(&self, bytes: usize) -> bool {
        self.bytes + bytes <= self.max_bytes
    }

    /// Drop every kept session; returns how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.entries.len();
        self.entries.clear();
        self.bytes = 0;
        n
    }

    /// Keep a finished session; evicts least recently used ones beyond the
    /// bound (the new one too, if it alone is larger than the bound).
    pub fn put(&mut self, session: Session) {
        if session.tokens.is_empty() {
            return;
        }
        self.clock += 1;
        let bytes = session_bytes(&session);
        self.entries.push(Entry { session, bytes, last_used: self.clock });
        self.bytes += bytes;
        while self.bytes > self.max_bytes {
            if self.take_lru().is_none() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::CacheType;

    fn session(tokens: &[u32], capacity: usize, ty: CacheType) -> Session {
        let mut cache = KvCache::new(2, 3, 1, capacity, ty);
        for (p, &t) in tokens.iter().enumerate() {
            for l in 0..2 {
                cache.k[l].write(p * 3, &[t as f32 + l as f32; 3]);
                cache.v[l].write(p, &[-(t as f32)]);
            }
        }
        cache.len = tokens.len();
        Session { cache, tokens: tokens.to_vec(), draft: None }
    }

    fn read(rows: &crate::models::KvRows, at: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n];
        rows.read(at, &mut out);
        out
    }

    #[test]
    fn takes_the_longest_prefix_and_evicts_lru() {
        let ty = CacheType::F16;
        let one = cache_bytes(&session(&[1], 8, ty).cache);
        assert_eq!(one, 2 * (8 * 3 + 8) * 2);
        assert_eq!(cache_bytes(&session(&[1], 8, CacheType::F32).cache), 2 * one);
        let mut pool = SessionPool::new(2 * one);
        pool.put(session(&[1, 2, 3], 8, ty));
        pool.put(session(&[1, 2, 9, 9], 8, ty));
        assert_eq!(pool.best_match(&[1, 2, 9, 5]), 3);
        let (s, c) = pool.take_best(&[1, 2, 9, 5]).unwrap();
        assert_eq!((s.tokens.as_slice(), c), (&[1, 2, 9, 9][..], 3));
        assert!(pool.take_best(&[7]).is_none());
        pool.put(s);
        // A third session evicts the least recently used ([1, 2, 3]).
        pool.put(session(&[5], 8, ty));
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.bytes(), 2 * one);
        assert_eq!(pool.best_match(&[1, 2, 3]), 2);
    }

    #[test]
    fn grow_keeps_rows_and_copy_takes_a_prefix() {
        for ty in [CacheType::F32, CacheType::F16] {
            let mut s = session(&[4, 5, 6], 3, ty);
            grow_cache(&mut s.cache, 10);
            assert_eq!((s.cache.capacity, s.cache.k[1].len(), s.cache.v[0].len()), (10, 30, 10));
            assert_eq!(read(&s.cache.k[1], 3, 3), [6.0, 6.0, 6.0]);
            let mut d = session(&[], 4, ty);
            copy_prefix(&s, &mut d, 2);
            assert_eq!(d.tokens, [4, 5]);
            assert_eq!(d.cache.len, 2);
            assert_eq!(read(&d.cache.k[0], 0, 6), [4.0, 4.0, 4.0, 5.0, 5.0, 5.0]);
            assert_eq!(read(&d.cache.v[1], 0, 2), [-4.0, -5.0]);
        }
    }
}
