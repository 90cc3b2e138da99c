//! The linearizability search for one partition: Wing & Gong's backtracking with Lowe's just-in-time
//! linearization, memoizing (set of linearized operations, model state) so that no configuration is
//! explored twice (the scheme Porcupine uses). Three sound reductions keep busy keys tractable:
//! a read legal at the current point is placed there without branching (any linearization placing it
//! later can move it back); states holding a value nobody observes are merged ([`Model::forget`]); and
//! of two pending blind writes with the same effect only the one due first is tried.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::time::Instant;

/// A sequential specification. `step` is the whole semantics; the other methods let the checker drop
/// operations that cannot matter and explain failures.
pub trait Model: Sync {
    type Input: Clone + Debug + Send + Sync;
    type State: Clone + Eq + Hash + Debug + Send;

    fn name(&self) -> &'static str;
    fn init(&self) -> Self::State;
    /// The state after `input` takes effect in `state`, or `None` if it cannot happen there.
    fn step(&self, state: &Self::State, input: &Self::Input) -> Option<Self::State>;
    /// The unique value the operation installs when it takes effect, if it writes one.
    fn writes(&self, input: &Self::Input) -> Option<u64>;
    /// The value the operation saw (`Some(None)` = absent), if it observes one.
    fn reads(&self, input: &Self::Input) -> Option<Option<u64>>;
    /// True when the operation may depend on a write of unknown outcome other than by reading its
    /// value (then such writes cannot be dropped from its partition).
    fn observes_unknown(&self, _input: &Self::Input) -> bool {
        false
    }
    /// True when the operation never changes the state (a read).
    fn read_only(&self, input: &Self::Input) -> bool;
    fn describe(&self, input: &Self::Input) -> String;
    fn describe_state(&self, state: &Self::State) -> String;
    /// The state with its value replaced by one no operation observes. States that differ only in
    /// such a value behave alike from then on, so the memo may merge them.
    fn forget(&self, state: Self::State) -> Self::State;
    /// Whether two blind operations change any state the same way (then the search tries only the
    /// one due first).
    fn same_effect(&self, _a: &Self::Input, _b: &Self::Input) -> bool {
        false
    }
}

/// One operation of a partition, as the search sees it.
#[derive(Clone, Debug)]
pub struct SearchOp<I> {
    pub input: I,
    pub call: u64,
    /// `None` = may take effect any time after the call (unknown outcome).
    pub ret: Option<u64>,
    /// Must be linearized. Optional operations (unknown outcome) may also never happen.
    pub required: bool,
    pub invoke_index: usize,
    pub complete_index: Option<usize>,
    /// Writes a value no operation observes (set by [`resolve_unknown`]).
    pub blind: bool,
}

/// Why a partition is not linearizable: the longest prefix the search could linearize.
#[derive(Clone, Debug)]
pub struct Failure<S> {
    /// Positions (into the partition's ops) in linearization order.
    pub prefix: Vec<usize>,
    /// The model state after `prefix`.
    pub state: S,
    /// The required operation whose return came before it could be linearized after `prefix`.
    pub blocked: Option<usize>,
}

#[derive(Clone, Debug)]
pub enum Verdict<S> {
    Linearizable,
    Illegal(Failure<S>),
    /// The deadline passed or the memo grew past its memory bound.
    GaveUp(&'static str),
}

#[derive(Clone, Debug)]
pub struct Outcome<S> {
    pub verdict: Verdict<S>,
    /// Distinct (linearized set, state) configurations explored.
    pub states: usize,
}

/// Memo entries are bounded by bytes, so a hard partition ends as "unknown", not out of memory.
const MEMO_BYTES: usize = 512 << 20;

/// The set of linearized operations. Operations are mostly linearized in call order, so a memo key
/// keeps only "every operation below `prefix`" plus the words from there to the last nonzero one.
struct Bits {
    words: Vec<u64>,
    /// Every operation below this index is in the set.
    prefix: usize,
    /// No word above this one is nonzero.
    high: usize,
}

impl Bits {
    fn new(n: usize) -> Self {
        Bits {
            words: vec![0; n.div_ceil(64).max(1)],
            prefix: 0,
            high: 0,
        }
    }
    fn contains(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }
    fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
        self.high = self.high.max(i / 64);
        while self.prefix < self.words.len() * 64 && self.contains(self.prefix) {
            self.prefix += 1;
        }
    }
    fn remove(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
        self.prefix = self.prefix.min(i);
    }
    /// The canonical rest of the set beyond the prefix.
    fn tail(&mut self) -> Box<[u64]> {
        while self.high > 0 && self.words[self.high] == 0 {
            self.high -= 1;
        }
        let from = self.prefix / 64;
        if from > self.high {
            return Box::new([]);
        }
        self.words[from..=self.high].into()
    }
}

/// A memo key. Its hash is the incrementally maintained Zobrist hash of the set plus the state's hash,
/// so hashing does not walk the set.
struct Key<S> {
    zobrist: u64,
    prefix: usize,
    tail: Box<[u64]>,
    state: S,
}

impl<S: Hash> Hash for Key<S> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.zobrist.hash(h);
        self.state.hash(h);
    }
}
impl<S: PartialEq> PartialEq for Key<S> {
    fn eq(&self, other: &Self) -> bool {
        self.zobrist == other.zobrist
            && self.prefix == other.prefix
            && self.state == other.state
            && self.tail == other.tail
    }
}
impl<S: Eq> Eq for Key<S> {}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The time-ordered list of call and return entries, with O(1) removal and reinsertion (dancing links).
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per entry: (op, is_call). Entry 0 is the head sentinel, the last one the tail sentinel.
    what: Vec<(usize, bool)>,
    /// Per op: its return entry.
    ret_entry: Vec<usize>,
}

const HEAD: usize = 0;

impl Entries {
    fn new<I>(ops: &[SearchOp<I>]) -> Self {
        // Calls sort before returns at the same instant: touching operations count as concurrent.
        let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            order.push((op.call, 0, i));
            order.push((op.ret.unwrap_or(u64::MAX), 1, i));
        }
        order.sort_unstable();
        let n = order.len() + 2;
        let mut what = Vec::with_capacity(n);
        what.push((usize::MAX, false));
        let mut ret_entry = vec![0; ops.len()];
        for (pos, &(_, kind, op)) in order.iter().enumerate() {
            if kind == 1 {
                ret_entry[op] = pos + 1;
            }
            what.push((op, kind == 0));
        }
        what.push((usize::MAX, false));
        let next = (0..n).map(|i| i + 1).collect();
        let prev = (0..n).map(|i| i.wrapping_sub(1)).collect();
        Entries {
            next,
            prev,
            what,
            ret_entry,
        }
    }

    fn tail(&self) -> usize {
        self.what.len() - 1
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        self.prev[n] = e;
    }

    /// Removes a call entry and its return entry.
    fn lift(&mut self, call: usize) {
        let r = self.ret_entry[self.what[call].0];
        self.unlink(call);
        self.unlink(r);
    }

    /// Undoes [`Entries::lift`] (in reverse order, so the saved links are still right).
    fn unlift(&mut self, call: usize) {
        let r = self.ret_entry[self.what[call].0];
        self.relink(r);
        self.relink(call);
    }
}

/// Searches for a linearization of `ops` consistent with their real-time order and `model`.
pub fn search<M: Model>(model: &M, ops: &[SearchOp<M::Input>], deadline: Instant) -> Outcome<M::State> {
    if Instant::now() >= deadline {
        return Outcome {
            verdict: Verdict::GaveUp("time budget exhausted"),
            states: 0,
        };
    }
    let mut entries = Entries::new(ops);
    let tail = entries.tail();
    let zob: Vec<u64> = (0..ops.len() as u64).map(splitmix).collect();
    let mut memo_bytes = 0usize;

    let mut memo: HashSet<Key<M::State>> = HashSet::new();
    let mut bits = Bits::new(ops.len());
    let mut zobrist = 0u64;
    let mut state = model.init();
    let mut remaining = ops.iter().filter(|o| o.required).count();
    // (call entry, state before it)
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut best: Vec<usize> = Vec::new();
    let mut best_state = state.clone();
    let mut blocked: Option<usize> = None;
    let mut cur = entries.next[HEAD];
    let mut iterations = 0u64;
    // Just arrived at a new configuration (try a forced move first).
    let mut fresh = true;

    loop {
        if remaining == 0 {
            return Outcome {
                verdict: Verdict::Linearizable,
                states: memo.len(),
            };
        }
        iterations += 1;
        if iterations.is_multiple_of(1024) {
            if Instant::now() >= deadline {
                return Outcome {
                    verdict: Verdict::GaveUp("time budget exhausted"),
                    states: memo.len(),
                };
            }
            if memo_bytes > MEMO_BYTES {
                return Outcome {
                    verdict: Verdict::GaveUp("memo exceeded its memory bound"),
                    states: memo.len(),
                };
            }
        }
        // A read legal here is placed here without branching: any linearization placing it later can
        // move it back (it changes nothing and nothing pending had to precede it).
        let forced = if std::mem::take(&mut fresh) {
            neutral_candidate(model, ops, &entries, &state)
        } else {
            None
        };
        if let Some(e) = forced {
            cur = e;
        }
        let (op, is_call) = if cur == tail {
            (usize::MAX, false)
        } else {
            entries.what[cur]
        };
        if is_call {
            if forced.is_none() && ops[op].blind && dominated(model, ops, &entries, cur) {
                cur = entries.next[cur];
                continue;
            }
            let next = model.step(&state, &ops[op].input);
            let next = if ops[op].blind {
                next.map(|s| model.forget(s))
            } else {
                next
            };
            if let Some(next_state) = next {
                bits.insert(op);
                zobrist ^= zob[op];
                let rest = bits.tail();
                let size = rest.len() * 8 + std::mem::size_of::<Key<M::State>>() + 16;
                let key = Key {
                    zobrist,
                    prefix: bits.prefix,
                    tail: rest,
                    state: next_state.clone(),
                };
                if memo.insert(key) {
                    memo_bytes += size;
                    stack.push((cur, std::mem::replace(&mut state, next_state)));
                    entries.lift(cur);
                    if ops[op].required {
                        remaining -= 1;
                    }
                    if stack.len() > best.len() {
                        best = stack.iter().map(|(e, _)| entries.what[*e].0).collect();
                        best_state = state.clone();
                        blocked = None;
                    }
                    cur = entries.next[HEAD];
                    fresh = true;
                    continue;
                }
                bits.remove(op);
                zobrist ^= zob[op];
            }
            if forced.is_none() {
                cur = entries.next[cur];
                continue;
            }
            // The forced move leads where the search has been: this configuration fails too.
        } else if cur != tail && !ops[op].required {
            // An optional operation's return is no deadline: it may also never happen.
            cur = entries.next[cur];
            continue;
        }
        // A required operation returned before it could be linearized here: undo the last choice.
        if cur != tail && !is_call && stack.len() == best.len() && blocked.is_none() {
            blocked = Some(op);
        }
        // Undo the last choice. An operation that left the state unchanged (a read) and was legal where
        // it was placed need not be tried later instead: any linearization with it later can move it
        // back there (nothing before its call was still pending). So keep undoing past such ones.
        loop {
            let Some((e, previous)) = stack.pop() else {
                return Outcome {
                    verdict: Verdict::Illegal(Failure {
                        prefix: best,
                        state: best_state,
                        blocked,
                    }),
                    states: memo.len(),
                };
            };
            let undone = entries.what[e].0;
            bits.remove(undone);
            zobrist ^= zob[undone];
            let neutral = previous == state;
            state = previous;
            entries.unlift(e);
            if ops[undone].required {
                remaining += 1;
            }
            if !neutral {
                cur = entries.next[e];
                break;
            }
        }
    }
}

/// The first pending read-like operation (one that leaves the state as it is) legal in `state`.
fn neutral_candidate<M: Model>(
    model: &M,
    ops: &[SearchOp<M::Input>],
    entries: &Entries,
    state: &M::State,
) -> Option<usize> {
    let tail = entries.tail();
    let mut e = entries.next[HEAD];
    while e != tail {
        let (op, is_call) = entries.what[e];
        if !is_call {
            if ops[op].required {
                return None;
            }
        } else if model.read_only(&ops[op].input) && model.step(state, &ops[op].input).as_ref() == Some(state) {
            return Some(e);
        }
        e = entries.next[e];
    }
    None
}

/// Whether the blind operation at call entry `at` has a twin pending with an earlier deadline: if
/// so, placing the twin here instead is never worse (swap the two in any linearization), so `at`
/// need not be tried. Twins earlier in the list were already tried here (and failed or were memoized).
fn dominated<M: Model>(model: &M, ops: &[SearchOp<M::Input>], entries: &Entries, at: usize) -> bool {
    let op = entries.what[at].0;
    let due = |i: usize| (ops[i].ret.unwrap_or(u64::MAX), i);
    let mine = due(op);
    let tail = entries.tail();
    let mut e = entries.next[at];
    while e != tail {
        let (other, is_call) = entries.what[e];
        if !is_call {
            if ops[other].required {
                // Nothing after the first pending deadline can go here.
                break;
            }
        } else if ops[other].blind && due(other) < mine && model.same_effect(&ops[other].input, &ops[op].input) {
            return true;
        }
        e = entries.next[e];
    }
    false
}

/// Drops operations with unknown outcome that cannot matter, pins down those that must have
/// happened, and marks writes nobody observes as blind. Values written are unique, so an unknown write whose value nobody observed may be assumed
/// never to have happened (removing an unobserved write keeps any linearization valid), and one whose
/// value an `ok` operation observed did happen, before the earliest such observer returned. Unknown
/// reads tell nothing. Returns the kept operations and how many were dropped.
pub fn resolve_unknown<M: Model>(model: &M, ops: Vec<SearchOp<M::Input>>) -> (Vec<SearchOp<M::Input>>, usize) {
    let unknown: Vec<bool> = ops.iter().map(|o| !o.required).collect();
    let mut ops = ops;
    // Iterate to a fixpoint: an unknown op that turned out to have happened can itself be the observer
    // of another's value (an unknown CAS whose result was read), and bounds only ever shrink.
    loop {
        let mut earliest: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
        for o in ops.iter().filter(|o| o.required) {
            if let (Some(Some(v)), Some(r)) = (model.reads(&o.input), o.ret) {
                let slot = earliest.entry(v).or_insert(r);
                *slot = (*slot).min(r);
            }
        }
        let mut changed = false;
        for (o, _) in ops.iter_mut().zip(&unknown).filter(|(_, u)| **u) {
            let Some(v) = model.writes(&o.input) else { continue };
            if let Some(&r) = earliest.get(&v) {
                let r = r.max(o.call);
                if !o.required || o.ret != Some(r) {
                    o.required = true;
                    o.ret = Some(r);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let before = ops.len();
    let keep_unobserved = ops.iter().any(|o| o.required && model.observes_unknown(&o.input));
    // Still optional: unobserved writes and unknown reads go; other effects stay optional.
    let mut kept: Vec<_> = ops
        .into_iter()
        .filter(|o| {
            o.required || !(model.read_only(&o.input) || (model.writes(&o.input).is_some() && !keep_unobserved))
        })
        .collect();
    let dropped = before - kept.len();
    let observed: std::collections::HashSet<u64> =
        kept.iter().filter_map(|o| model.reads(&o.input).flatten()).collect();
    for o in &mut kept {
        o.blind = model.writes(&o.input).is_some_and(|v| !observed.contains(&v));
    }
    (kept, dropped)
}
