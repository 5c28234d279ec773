//! HAProxy agent-check answers: one line of words separated by commas, spaces or tabs,
//! optionally followed by `#` and a description (HAProxy's `agent-check` semantics). The
//! words sluice acts on: `NN%` or `weight:NN%` (a percentage of the configured weight),
//! `weight:N`, `drain`, `maint`, `ready`, `up`, `down`, `fail`, `stopped`. Others
//! (`maxconn:N`, unknown words) are ignored.

use super::Agent;

/// The longest line read from an agent, in bytes.
pub const MAX_LINE: usize = 1024;

/// What `line` says. When it says several things, the strongest wins: down (`down`,
/// `fail`, `stopped`) over `maint` over `drain` over a weight over `ready`/`up`. `Ok(None)`:
/// only words sluice does not act on. An empty line is an error.
pub fn parse(line: &str) -> Result<Option<Agent>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (words, reason) = match line.split_once('#') {
        Some((w, r)) => (w, r.trim()),
        None => (line, ""),
    };
    if words.trim().is_empty() {
        return Err(if line.trim().is_empty() {
            "the agent answered an empty line".to_owned()
        } else {
            format!("the agent answered only a description ({line:?})")
        });
    }
    let (mut down, mut maint, mut drain, mut ready) = (false, false, false, false);
    let mut weight = None;
    for w in words
        .split([',', ' ', '\t'])
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
    {
        match w.as_str() {
            "down" | "fail" | "stopped" => down = true,
            "maint" => maint = true,
            "drain" => drain = true,
            "ready" | "up" => ready = true,
            _ => {
                if let Some(a) = weight_word(&w)? {
                    weight = Some(a);
                }
            }
        }
    }
    Ok(if down {
        Some(Agent::Down(reason.to_owned()))
    } else if maint {
        Some(Agent::Maint)
    } else if drain {
        Some(Agent::Drain)
    } else if weight.is_some() {
        weight
    } else {
        ready.then_some(Agent::Ready)
    })
}

/// `75%`, `weight:75%` or `weight:3`; `None` for other words.
fn weight_word(w: &str) -> Result<Option<Agent>, String> {
    let (explicit, v) = match w.strip_prefix("weight:") {
        Some(v) => (true, v),
        None => (false, w),
    };
    if let Some(pct) = v.strip_suffix('%') {
        return match pct.parse::<u32>() {
            Ok(p) => Ok(Some(Agent::WeightPercent(p))),
            Err(_) if explicit => Err(format!("{w:?}: {pct:?} is not a percentage")),
            Err(_) => Ok(None),
        };
    }
    if explicit {
        return v
            .parse::<u32>()
            .map(|n| Some(Agent::Weight(n)))
            .map_err(|_| format!("{w:?}: {v:?} is not a weight"));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_lines() {
        use Agent::*;
        let cases: &[(&str, Option<Agent>)] = &[
            ("75%\n", Some(WeightPercent(75))),
            ("weight:75%", Some(WeightPercent(75))),
            ("weight:3\r\n", Some(Weight(3))),
            ("up", Some(Ready)),
            ("ready, 50%", Some(WeightPercent(50))),
            ("drain", Some(Drain)),
            ("MAINT", Some(Maint)),
            ("down", Some(Down(String::new()))),
            ("down#disk full", Some(Down("disk full".to_owned()))),
            ("up 80% # warming up", Some(WeightPercent(80))),
            ("fail", Some(Down(String::new()))),
            ("stopped", Some(Down(String::new()))),
            ("drain,down", Some(Down(String::new()))),
            ("maint drain", Some(Maint)),
            ("maxconn:10 hello", None),
            ("abc%", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line).as_ref(), Ok(want), "{line:?}");
        }
        for bad in ["", "\n", "  ", "#only a reason", "weight:x", "weight:x%"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
