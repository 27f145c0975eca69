//! Stop strings: generation ends before the first stop string that the
//! output completes, and text that could still become one is held back.
//!
//! The engine thread scans every stream at every token, so the scan must not
//! grow with the stop strings or with the text. [`StopMatcher`] is an
//! Aho–Corasick automaton over the stop strings (a trie with failure links):
//! each new byte of output moves it by one state, amortised O(1), and the
//! state's depth is the longest suffix of the output that is a beginning of
//! some stop string, which is exactly what must be held back. A token costs
//! the bytes of its text, whatever the number and length of the stop strings
//! (the server bounds both: 16 strings of at most 256 bytes).

/// The automaton over a set of stop strings. State 0 is the root.
#[derive(Clone, Debug)]
pub struct StopMatcher {
    /// Each state's outgoing edges, sorted by byte.
    edges: Vec<Vec<(u8, u32)>>,
    fail: Vec<u32>,
    /// Bytes from the root: the length of the state's string.
    depth: Vec<u32>,
    /// Length of the longest stop string that ends at this state (the state's
    /// own string or one reached through failure links); 0 if none.
    found: Vec<u32>,
}

impl StopMatcher {
    /// `None` when there is no non-empty stop string.
    pub fn new<S: AsRef<str>>(stops: &[S]) -> Option<StopMatcher> {
        let mut m = StopMatcher { edges: vec![Vec::new()], fail: vec![0], depth: vec![0], found: vec![0] };
        let mut any = false;
        for s in stops.iter().map(AsRef::as_ref).filter(|s| !s.is_empty()) {
            any = true;
            let mut at = 0u32;
            for &b in s.as_bytes() {
                at = match m.child(at, b) {
                    Some(next) => next,
                    None => {
                        let next = m.edges.len() as u32;
                        let depth = m.depth[at as usize] + 1;
                        m.edges.push(Vec::new());
                        m.fail.push(0);
                        m.depth.push(depth);
                        m.found.push(0);
                        let e = &mut m.edges[at as usize];
                        let pos = e.partition_point(|&(x, _)| x < b);
                        e.insert(pos, (b, next));
                        next
                    }
                };
            }
            m.found[at as usize] = m.depth[at as usize];
        }
        if !any {
            return None;
        }
        // Failure links in breadth-first order: a state's link is the deepest
        // proper suffix of its string that is also a state.
        let mut queue = std::collections::VecDeque::from(m.edges[0].iter().map(|&(_, s)| s).collect::<Vec<_>>());
        while let Some(s) = queue.pop_front() {
            let edges = m.edges[s as usize].clone();
            for (b, next) in edges {
                let mut f = m.fail[s as usize];
                let link = loop {
                    if let Some(t) = m.child(f, b) {
                        break t;
                    }
                    if f == 0 {
                        break 0;
                    }
                    f = m.fail[f as usize];
                };
                m.fail[next as usize] = link;
                if m.found[next as usize] == 0 {
                    m.found[next as usize] = m.found[link as usize];
                }
                queue.push_back(next);
            }
        }
        Some(m)
    }

    fn child(&self, state: u32, b: u8) -> Option<u32> {
        let e = &self.edges[state as usize];
        e.binary_search_by_key(&b, |&(x, _)| x).ok().map(|i| e[i].1)
    }

    /// The state after reading `b` in `state`.
    pub fn step(&self, mut state: u32, b: u8) -> u32 {
        loop {
            if let Some(t) = self.child(state, b) {
                return t;
            }
            if state == 0 {
                return 0;
            }
            state = self.fail[state as usize];
        }
    }

    /// Length of the longest stop string that ends in `state` (0: none).
    pub fn found(&self, state: u32) -> usize {
        self.found[state as usize] as usize
    }

    /// Bytes of output in `state` that could begin a stop string.
    pub fn pending(&self, state: u32) -> usize {
        self.depth[state as usize] as usize
    }
}

/// Holds back text that could be the start of a stop string, and cuts the
/// output before the first stop string it completes (of several completed by
/// the same byte, the longest, which begins first).
#[derive(Clone, Debug)]
pub struct StopScanner {
    matcher: Option<StopMatcher>,
    state: u32,
    /// Text not emitted yet: the output's longest suffix that begins a stop string.
    held: String,
    stopped: bool,
}

impl StopScanner {
    pub fn new(stops: Vec<String>) -> StopScanner {
        StopScanner { matcher: StopMatcher::new(&stops), state: 0, held: String::new(), stopped: false }
    }

    /// Add text; returns (text now safe to emit, whether a stop string was hit).
    /// After a hit, nothing more is emitted.
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        let Some(m) = &self.matcher else { return (piece.to_string(), false) };
        let base = self.held.len();
        for (i, &b) in piece.as_bytes().iter().enumerate() {
            self.state = m.step(self.state, b);
            let len = m.found(self.state);
            if len > 0 {
                // The stop string's first bytes are held back or in this piece
                // (held text is the longest suffix that begins a stop string).
                // Both ends are character boundaries: the stop string is whole
                // characters, matched byte for byte in valid UTF-8.
                self.held.push_str(&piece[..=i]);
                let start = base + i + 1 - len;
                self.held.truncate(start);
                self.stopped = true;
                return (std::mem::take(&mut self.held), true);
            }
        }
        self.held.push_str(piece);
        let keep = m.pending(self.state);
        let out = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        (out, false)
    }

    /// End of output: everything still held back.
    pub fn finish(&mut self) -> String {
        self.state = 0;
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_and_cuts() {
        let stops = vec!["<end>".to_string()];
        let mut s = StopScanner::new(stops.clone());
        assert_eq!(s.push("hello <e"), ("hello ".to_string(), false));
        assert_eq!(s.push("n"), (String::new(), false));
        assert_eq!(s.push("d> more"), (String::new(), true));
        assert_eq!(s.push("later"), (String::new(), true));
        let mut s = StopScanner::new(stops);
        assert_eq!(s.push("a <"), ("a ".to_string(), false));
        assert_eq!(s.push("b"), ("<b".to_string(), false));
        assert_eq!(s.finish(), "");
        // Multi-byte characters on both sides of a stop string.
        let mut s = StopScanner::new(vec!["猛ab".to_string()]);
        assert_eq!(s.push("x猛"), ("x".to_string(), false));
        assert_eq!(s.push("a"), (String::new(), false));
        assert_eq!(s.push("c猛"), ("猛ac".to_string(), false));
        assert_eq!(s.push("abé"), (String::new(), true));
        // Held text comes out at the end.
        let mut s = StopScanner::new(vec!["STOP".to_string()]);
        assert_eq!(s.push("x ST"), ("x ".to_string(), false));
        assert_eq!(s.finish(), "ST");
        // No stop strings: everything passes.
        let mut s = StopScanner::new(vec![String::new()]);
        assert_eq!(s.push("<end>"), ("<end>".to_string(), false));
    }

    /// What the scanner must produce, computed the slow way: the whole text,
    /// cut before the stop string that ends first (the longest of those
    /// ending at the same byte).
    fn reference(text: &str, stops: &[String]) -> (String, bool) {
        for end in 1..=text.len() {
            let best = stops.iter().filter(|s| !s.is_empty() && text.as_bytes()[..end].ends_with(s.as_bytes()));
            if let Some(s) = best.max_by_key(|s| s.len()) {
                return (text[..end - s.len()].to_string(), true);
            }
        }
        (text.to_string(), false)
    }

    #[test]
    fn matches_the_slow_reference_on_random_streams() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // A small alphabet (with a two-byte and a three-byte character) so
        // that stop strings overlap, share prefixes and nest.
        let alphabet = ["a", "b", "c", "é", "猛"];
        let word = |rng: &mut rand::rngs::StdRng, n: usize| -> String {
            (0..n).map(|_| alphabet[rng.gen_range(0..alphabet.len())]).collect()
        };
        for _ in 0..3000 {
            let stops: Vec<String> = (0..rng.gen_range(1..5))
                .map(|_| {
                    let n = rng.gen_range(1..5);
                    word(&mut rng, n)
                })
                .collect();
            let pieces: Vec<String> = (0..rng.gen_range(1..12))
                .map(|_| {
                    let n = rng.gen_range(0..4);
                    word(&mut rng, n)
                })
                .collect();
            let mut s = StopScanner::new(stops.clone());
            let (mut out, mut hit) = (String::new(), false);
            for p in &pieces {
                let (t, h) = s.push(p);
                out.push_str(&t);
                if h {
                    hit = true;
                    break;
                }
            }
            if !hit {
                out.push_str(&s.finish());
            }
            assert_eq!((out, hit), reference(&pieces.concat(), &stops), "stops {stops:?}, pieces {pieces:?}");
        }
    }

    #[test]
    fn sixteen_long_overlapping_stop_strings_stay_bounded() {
        // 16 stop strings of 256 bytes sharing long prefixes, and an output
        // that keeps almost matching them: the automaton has at most
        // 16 × 256 states, and each byte of output is one step.
        let stops: Vec<String> = (0..16u8).map(|i| format!("{}{}", "a".repeat(255), (b'A' + i) as char)).collect();
        let m = StopMatcher::new(&stops).unwrap();
        assert!(m.edges.len() <= 16 * 256 + 1);
        let mut s = StopScanner::new(stops);
        let mut emitted = 0;
        for _ in 0..10_000 {
            let (t, hit) = s.push("a");
            assert!(!hit);
            emitted += t.len();
        }
        // Only the last 255 bytes can begin a stop string.
        assert_eq!(emitted, 10_000 - 255);
        assert_eq!(s.push("F"), (String::new(), true));
    }
}
