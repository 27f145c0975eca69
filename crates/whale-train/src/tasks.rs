//! Verifiable tasks: seeded problem generators, their rule-based rewards,
//! a flawed teacher for the starting policy, and the characters the tiny
//! models read and write.
//!
//! A problem is a prompt such as `123+45=`; an answer is written
//! `<answer>168</answer>`. Nothing is downloaded: every problem comes from a
//! seeded generator, and a fixed tenth of each task's problems (by a hash
//! of the prompt) is held out: the training generator never returns them,
//! the evaluation set is drawn from them alone.

use rand::Rng;

use crate::TrainError;

/// The tiny models' vocabulary: control tokens, then one token a character.
pub const VOCAB: [&str; 24] = [
    "<s>",
    "</s>",
    "<answer>",
    "</answer>",
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "+",
    "*",
    "-",
    "/",
    "=",
    "(",
    ")",
    ",",
    ":",
    " ",
];
pub const BOS: u32 = 0;
pub const EOS: u32 = 1;
pub const ANSWER_OPEN: u32 = 2;
pub const ANSWER_CLOSE: u32 = 3;

/// Character-level encoding; `<answer>` and `</answer>` are single tokens.
/// Characters outside [`VOCAB`] are an error (prompts come from the
/// generators, never from users, in this vocabulary).
pub fn encode(text: &str) -> Result<Vec<u32>, TrainError> {
    let mut out = vec![];
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("<answer>") {
            out.push(ANSWER_OPEN);
            rest = r;
        } else if let Some(r) = rest.strip_prefix("</answer>") {
            out.push(ANSWER_CLOSE);
            rest = r;
        } else {
            let s = c.to_string();
            let id = VOCAB
                .iter()
                .skip(4)
                .position(|v| *v == s)
                .ok_or_else(|| TrainError::Input(format!("character {c:?} is not in the tiny vocabulary")))?;
            out.push(id as u32 + 4);
            rest = &rest[c.len_utf8()..];
        }
    }
    Ok(out)
}

/// Text of token ids; the control tokens `<s>`/`</s>` are dropped.
pub fn decode(ids: &[u32]) -> String {
    ids.iter().filter(|&&i| i > EOS).filter_map(|&i| VOCAB.get(i as usize)).copied().collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// `a+b=` with three-digit `a` and `b`.
    Addition,
    /// `a*b=` with a three-digit `a` and `2 ≤ b ≤ 9`.
    Multiplication,
    /// `n1,n2,n3,n4:target=`: an expression over some of the numbers (each
    /// at most once) with `+ - * /` and parentheses that equals the target.
    Countdown,
    /// `d,d,d,d,d=`: the digits in ascending order.
    Sorting,
}

impl Task {
    pub const ALL: [Task; 4] = [Task::Addition, Task::Multiplication, Task::Countdown, Task::Sorting];

    pub fn name(self) -> &'static str {
        match self {
            Task::Addition => "addition",
            Task::Multiplication => "multiplication",
            Task::Countdown => "countdown",
            Task::Sorting => "sorting",
        }
    }

    pub fn from_name(s: &str) -> Result<Task, TrainError> {
        Task::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let known: Vec<_> = Task::ALL.iter().map(|t| t.name()).collect();
            TrainError::Input(format!("unknown task {s:?}: the tasks are {}", known.join(", ")))
        })
    }

    /// Longest answer in tokens, `<answer>` and `</answer>` included.
    pub fn max_answer_tokens(self) -> usize {
        match self {
            Task::Addition | Task::Multiplication => 16,
            Task::Countdown => 24,
            Task::Sorting => 12,
        }
    }
}

/// One problem: the prompt and what a correct answer must satisfy.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub task: Task,
    pub prompt: String,
    /// The canonical answer (for Countdown, one solution).
    pub answer: String,
    /// Countdown's numbers and target.
    pub numbers: Vec<i64>,
    pub target: i64,
}

/// FNV-1a of the prompt: which problems are held out does not depend on
/// the seed, the platform or the order they were drawn in.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// One problem in ten is held out, never trained on.
pub fn is_heldout(prompt: &str) -> bool {
    fnv1a(prompt).is_multiple_of(10)
}

impl Problem {
    fn draw(task: Task, rng: &mut impl Rng) -> Problem {
        let (numbers, target, prompt, answer) = match task {
            Task::Addition => {
                let (a, b) = (rng.gen_range(100..1000i64), rng.gen_range(100..1000i64));
                (vec![a, b], a + b, format!("{a}+{b}="), (a + b).to_string())
            }
            Task::Multiplication => {
                let (a, b) = (rng.gen_range(100..1000i64), rng.gen_range(2..10i64));
                (vec![a, b], a * b, format!("{a}*{b}="), (a * b).to_string())
            }
            Task::Sorting => {
                let d: Vec<i64> = (0..5).map(|_| rng.gen_range(0..10)).collect();
                let mut s = d.clone();
                s.sort();
                let list = |v: &[i64]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
                (d.clone(), 0, format!("{}=", list(&d)), list(&s))
            }
            Task::Countdown => loop {
                // Four numbers 1..=25 and a target reachable with all or some of them.
                let ns: Vec<i64> = (0..4).map(|_| rng.gen_range(1..=25)).collect();
                let target = rng.gen_range(10..=100i64);
                if let Some(expr) = countdown_solve(&ns, target) {
                    let list = ns.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
                    break (ns, target, format!("{list}:{target}="), expr);
                }
            },
        };
        Problem { task, prompt, answer, numbers, target }
    }

    /// A training problem (never a held-out one).
    pub fn train(task: Task, rng: &mut impl Rng) -> Problem {
        loop {
            let p = Problem::draw(task, rng);
            if !is_heldout(&p.prompt) {
                return p;
            }
        }
    }

    /// A held-out problem.
    pub fn heldout(task: Task, rng: &mut impl Rng) -> Problem {
        loop {
            let p = Problem::draw(task, rng);
            if is_heldout(&p.prompt) {
                return p;
            }
        }
    }

    /// The question in words, for a model that reads text.
    pub fn question(&self) -> String {
        let n = &self.numbers;
        match self.task {
            Task::Addition => format!("What is {} + {}?", n[0], n[1]),
            Task::Multiplication => format!("What is {} * {}?", n[0], n[1]),
            Task::Sorting => format!("Sort the digits {} in ascending order, separated by commas.", self.prompt.trim_end_matches('=')),
            Task::Countdown => format!(
                "Using some of the numbers {} once each, with + - * / and parentheses, write an expression equal to {}.",
                n.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "),
                self.target
            ),
        }
    }

    /// The prompt's token ids in the tiny vocabulary, `<s>` first.
    pub fn prompt_ids(&self) -> Vec<u32> {
        let mut ids = vec![BOS];
        ids.extend(encode(&self.prompt).expect("generated prompts are in the vocabulary"));
        ids
    }
}

/// What a completion was scored.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Score {
    /// The answer inside `<answer>…</answer>` is correct.
    pub strict: bool,
    /// The tagged answer, or else the last number of the text, is correct.
    pub lenient: bool,
    /// The completion ends with its one `<answer>…</answer>`.
    pub format: bool,
}

impl Score {
    /// The verifier's reward: 1 for a correct answer (lenient: the last
    /// number counts), plus 0.1 for the format.
    pub fn reward(self) -> f32 {
        (self.lenient as u8 as f32) + 0.1 * (self.format as u8 as f32)
    }
}

/// The text between `<answer>` and `</answer>`, if the completion has them.
fn tagged(text: &str) -> Option<&str> {
    let start = text.find("<answer>")? + "<answer>".len();
    let len = text[start..].find("</answer>")?;
    Some(&text[start..start + len])
}

/// The last run of digits in the text.
fn last_number(text: &str) -> Option<&str> {
    let end = text.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = text[..end].rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
    Some(&text[start..end])
}

/// Score a completion (the text after the prompt).
pub fn score(p: &Problem, completion: &str) -> Score {
    let tag = tagged(completion);
    let format = tag.is_some() && completion.ends_with("</answer>") && completion.matches("<answer>").count() == 1;
    let check = |ans: &str| -> bool {
        match p.task {
            Task::Countdown => countdown_check(ans, &p.numbers, p.target),
            _ => ans.trim() == p.answer,
        }
    };
    let strict = tag.is_some_and(check);
    let lenient = strict
        || match p.task {
            Task::Addition | Task::Multiplication => last_number(completion).is_some_and(check),
            _ => false,
        };
    Score { strict, lenient, format }
}

/// The flawed teacher whose imitation is the starting policy: it knows the
/// method but slips. Addition and multiplication work column by column
/// (`12,08,05:<answer>582</answer>` for 123+459) and forget each carry
/// into the next column with probability `slip`; sorting swaps one adjacent pair with probability
/// `slip`; Countdown writes a random expression over the numbers with
/// probability `slip`, else a solution.
pub fn teacher(p: &Problem, slip: f64, rng: &mut impl Rng) -> String {
    let body = match p.task {
        Task::Addition | Task::Multiplication => {
            // Column by column from the units: each column's total written
            // with two digits (operand digits plus the carry in), then the
            // answer. A slip forgets to carry into the next column.
            let (a, b) = (p.numbers[0], p.numbers[1]);
            let da: Vec<i64> = a.to_string().bytes().rev().map(|c| (c - b'0') as i64).collect();
            let db: Vec<i64> = b.to_string().bytes().rev().map(|c| (c - b'0') as i64).collect();
            let (mut cols, mut digits) = (vec![], vec![]);
            let mut carry = 0;
            for (i, &x) in da.iter().enumerate() {
                let s = if p.task == Task::Addition { x + db.get(i).unwrap_or(&0) + carry } else { x * b + carry };
                cols.push(format!("{s:02}"));
                digits.push(s % 10);
                carry = s / 10;
                if carry > 0 && i + 1 < da.len() && rng.gen_bool(slip) {
                    carry = 0;
                }
            }
            if carry > 0 {
                digits.push(carry);
            }
            let ans: String = digits.iter().rev().map(|d| d.to_string()).collect();
            return format!("{}:<answer>{ans}</answer>", cols.join(","));
        }
        Task::Sorting => {
            let mut s: Vec<i64> = p.answer.split(',').map(|x| x.parse().expect("digits")).collect();
            if rng.gen_bool(slip) {
                let i = rng.gen_range(0..s.len() - 1);
                s.swap(i, i + 1);
            }
            s.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
        }
        Task::Countdown => {
            if rng.gen_bool(slip) {
                let ops = ['+', '-', '*'];
                let mut e = p.numbers[0].to_string();
                for n in &p.numbers[1..3] {
                    e = format!("{e}{}{n}", ops[rng.gen_range(0..3)]);
                }
                e
            } else {
                p.answer.clone()
            }
        }
    };
    format!("<answer>{body}</answer>")
}

/// A Countdown solution: left-to-right combinations `((a∘b)∘c)∘d` over
/// ordered subsets of 2 to 4 numbers, written with parentheses. `None` when
/// no such expression reaches the target.
pub fn countdown_solve(ns: &[i64], target: i64) -> Option<String> {
    fn go(ns: &[i64], used: &mut Vec<bool>, val: i64, expr: String, depth: usize, target: i64) -> Option<String> {
        if depth >= 2 && val == target {
            return Some(expr);
        }
        for i in 0..ns.len() {
            if used[i] {
                continue;
            }
            used[i] = true;
            let n = ns[i];
            let wrap = |e: &str| if depth > 1 { format!("({e})") } else { e.to_string() };
            let cands = [
                (val + n, format!("{}+{n}", wrap(&expr))),
                (val - n, format!("{}-{n}", wrap(&expr))),
                (val * n, format!("{}*{n}", wrap(&expr))),
            ];
            for (v, e) in cands {
                if let Some(s) = go(ns, used, v, e, depth + 1, target) {
                    used[i] = false;
                    return Some(s);
                }
            }
            if n != 0 && val % n == 0 {
                if let Some(s) = go(ns, used, val / n, format!("{}/{n}", wrap(&expr)), depth + 1, target) {
                    used[i] = false;
                    return Some(s);
                }
            }
            used[i] = false;
        }
        None
    }
    let mut used = vec![false; ns.len()];
    for i in 0..ns.len() {
        used[i] = true;
        if let Some(s) = go(ns, &mut used, ns[i], ns[i].to_string(), 1, target) {
            return Some(s);
        }
        used[i] = false;
    }
    None
}

/// Whether `expr` is an arithmetic expression over `+ - * / ( )` and
/// integers, each a distinct one of `numbers` (a multiset), whose value is
/// `target` with every division exact. Parsed by a bounded recursive
/// descent: nothing is evaluated that the grammar does not allow, depth and
/// length are capped, and overflow is a wrong answer.
pub fn countdown_check(expr: &str, numbers: &[i64], target: i64) -> bool {
    struct P<'a> {
        s: &'a [u8],
        i: usize,
        left: Vec<i64>,
        depth: usize,
    }
    impl P<'_> {
        fn expr(&mut self) -> Option<i64> {
            let mut v = self.term()?;
            while let Some(&c) = self.s.get(self.i) {
                if c != b'+' && c != b'-' {
                    break;
                }
                self.i += 1;
                let r = self.term()?;
                v = if c == b'+' { v.checked_add(r)? } else { v.checked_sub(r)? };
            }
            Some(v)
        }
        fn term(&mut self) -> Option<i64> {
            let mut v = self.atom()?;
            while let Some(&c) = self.s.get(self.i) {
                if c != b'*' && c != b'/' {
                    break;
                }
                self.i += 1;
                let r = self.atom()?;
                v = if c == b'*' {
                    v.checked_mul(r)?
                } else {
                    if r == 0 || v % r != 0 {
                        return None;
                    }
                    v / r
                };
            }
            Some(v)
        }
        fn atom(&mut self) -> Option<i64> {
            match self.s.get(self.i)? {
                b'(' => {
                    self.depth += 1;
                    if self.depth > 16 {
                        return None;
                    }
                    self.i += 1;
                    let v = self.expr()?;
                    (self.s.get(self.i) == Some(&b')')).then_some(())?;
                    self.i += 1;
                    self.depth -= 1;
                    Some(v)
                }
                c if c.is_ascii_digit() => {
                    let start = self.i;
                    while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                        self.i += 1;
                    }
                    let n: i64 = std::str::from_utf8(&self.s[start..self.i]).ok()?.parse().ok()?;
                    let k = self.left.iter().position(|&x| x == n)?;
                    self.left.swap_remove(k);
                    Some(n)
                }
                _ => None,
            }
        }
    }
    let e = expr.trim();
    if e.is_empty() || e.len() > 64 {
        return false;
    }
    let mut p = P { s: e.as_bytes(), i: 0, left: numbers.to_vec(), depth: 0 };
    matches!(p.expr(), Some(v) if v == target) && p.i == p.s.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn encode_decode_round_trip_and_reject_foreign_characters() {
        let ids = encode("12+3=<answer>15</answer>").unwrap();
        assert_eq!(ids, vec![5, 6, 14, 7, 18, ANSWER_OPEN, 5, 9, ANSWER_CLOSE]);
        assert_eq!(decode(&ids), "12+3=<answer>15</answer>");
        assert!(encode("12a").is_err());
    }

    #[test]
    fn rewards_strict_lenient_and_format() {
        let p = Problem {
            task: Task::Addition,
            prompt: "12+3=".into(),
            answer: "15".into(),
            numbers: vec![12, 3],
            target: 15,
        };
        assert_eq!(score(&p, "<answer>15</answer>"), Score { strict: true, lenient: true, format: true });
        assert_eq!(score(&p, "so 15"), Score { strict: false, lenient: true, format: false });
        assert_eq!(score(&p, "<answer>16</answer>"), Score { strict: false, lenient: false, format: true });
        assert_eq!(score(&p, "<answer>15</answer>").reward(), 1.1);
        assert_eq!(score(&p, "<answer>1").reward(), 0.0);
        assert_eq!(score(&p, "02,01:<answer>15</answer>"), Score { strict: true, lenient: true, format: true });
        assert!(!score(&p, "<answer>15</answer> and more").format);
    }

    #[test]
    fn countdown_checker_is_strict_and_safe() {
        let ns = [3, 7, 25, 50];
        assert!(countdown_check("(50+25)+7+3", &ns, 85));
        assert!(countdown_check("50*3/25", &ns, 6));
        assert!(!countdown_check("50+50", &ns, 100), "a number used twice");
        assert!(!countdown_check("50/3", &ns, 16), "inexact division");
        assert!(!countdown_check("50+25+", &ns, 75), "trailing operator");
        assert!(!countdown_check("((((((((((((((((((3))))))))))))))))))", &ns, 3), "too deep");
        assert!(!countdown_check("99999999999999999999", &[1], 1), "overflow");
        // The solver's answers pass the checker.
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..50 {
            let p = Problem::train(Task::Countdown, &mut rng);
            assert!(countdown_check(&p.answer, &p.numbers, p.target), "{p:?}");
        }
    }

    #[test]
    fn heldout_split_is_disjoint_and_a_tenth() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for task in Task::ALL {
            for _ in 0..200 {
                assert!(!is_heldout(&Problem::train(task, &mut rng).prompt));
                assert!(is_heldout(&Problem::heldout(task, &mut rng).prompt));
            }
        }
        let held =
            (100..1000).flat_map(|a| (100..110).map(move |b| format!("{a}+{b}="))).filter(|p| is_heldout(p)).count();
        assert!((720..1080).contains(&held), "{held} of 9000");
    }

    /// The teacher is right when it does not slip, and with slip 1 drops
    /// every carry.
    #[test]
    fn teacher_slips_as_told() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for task in Task::ALL {
            for _ in 0..100 {
                let p = Problem::train(task, &mut rng);
                assert!(score(&p, &teacher(&p, 0.0, &mut rng)).strict, "{p:?}");
            }
        }
        let p = Problem {
            task: Task::Addition,
            prompt: "58+67=".into(),
            answer: "125".into(),
            numbers: vec![58, 67],
            target: 125,
        };
        assert_eq!(teacher(&p, 1.0, &mut rng), "15,11:<answer>115</answer>");
        assert_eq!(teacher(&p, 0.0, &mut rng), "15,12:<answer>125</answer>");
        let m = Problem {
            task: Task::Multiplication,
            prompt: "46*3=".into(),
            answer: "138".into(),
            numbers: vec![46, 3],
            target: 138,
        };
        assert_eq!(teacher(&m, 1.0, &mut rng), "18,12:<answer>128</answer>");
    }
}
