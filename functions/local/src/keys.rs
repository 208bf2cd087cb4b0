//! `local key ...`: make, limit, list and revoke API keys.

use anyhow::{Context, bail};
use common::spend::{KeyLimits, Period};
use common::store::Backend;

const USAGE: &str = "usage:
  local key create OWNER [NAME] [LIMITS]
  local key limits ID (LIMITS | --clear)
  local key list
  local key revoke ID
LIMITS: --rpm N  --tpm N  --concurrency N  --budget-usd X  --budget-tokens N
        --period day|month|total (of the budgets; default month)
(make key OWNER=alice NAME=laptop ARGS='--rpm 60', make revoke ID=...)";

/// `key create`, `key limits`, `key list` and `key revoke`.
pub async fn key(store: &dyn Backend, args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("create") => create(store, &args[1..]).await,
        Some("limits") => limits(store, &args[1..]).await,
        Some("list") if args.len() == 1 => list(store).await,
        Some("revoke") if args.len() == 2 => {
            let id = uuid::Uuid::parse_str(args[1].trim()).context("the key id is a UUID")?;
            if store.revoke_key(id).await? {
                println!("revoked {id}");
                Ok(())
            } else {
                bail!("no active key with id {id}")
            }
        }
        _ => bail!("{USAGE}"),
    }
}

async fn create(store: &dyn Backend, args: &[String]) -> anyhow::Result<()> {
    let (positional, limits, clear) = parse(args)?;
    if clear {
        bail!("--clear is for `key limits`\n{USAGE}");
    }
    let owner = positional.first().map(|o| o.trim()).unwrap_or_default();
    if owner.is_empty() || owner.contains(char::is_control) {
        bail!("a key needs an owner, a name its conversations belong to\n{USAGE}");
    }
    if positional.len() > 2 {
        bail!("unexpected argument {:?}\n{USAGE}", positional[2]);
    }
    let name = positional
        .get(1)
        .map(|n| n.trim())
        .filter(|n| !n.is_empty());
    let name = name.unwrap_or("default");
    let key = common::auth::new_key().map_err(|_| anyhow::anyhow!("no randomness"))?;
    let id = uuid::Uuid::now_v7();
    store
        .add_key(id, owner, name, &common::auth::digest(&key), &limits)
        .await?;
    println!(
        "id:     {id}\nowner:  {owner}\nname:   {name}\nlimits: {}\nkey:    {key}",
        describe(&limits)
    );
    eprintln!("The key is shown once; only its SHA-256 digest is stored.");
    Ok(())
}

async fn limits(store: &dyn Backend, args: &[String]) -> anyhow::Result<()> {
    let (positional, limits, clear) = parse(args)?;
    let [id] = positional.as_slice() else {
        bail!("`key limits` takes one key id\n{USAGE}");
    };
    let id = uuid::Uuid::parse_str(id.trim()).context("the key id is a UUID")?;
    if clear && limits.any() {
        bail!("--clear takes no other limit\n{USAGE}");
    }
    if !clear && !limits.any() {
        bail!("name the limits to set, or --clear to remove them\n{USAGE}");
    }
    if !store.set_limits(id, &limits).await? {
        bail!("no active key with id {id}");
    }
    println!("{id}: {}", describe(&limits));
    Ok(())
}

async fn list(store: &dyn Backend) -> anyhow::Result<()> {
    let keys = store.list_keys().await?;
    let when = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    println!(
        "{:<36}  {:<16}  {:<16}  {:<20}  {:<40}  {:<36}  revoked",
        "id", "owner", "name", "created", "limits", "spent this period"
    );
    for k in &keys {
        let revoked = k.revoked_at.map_or_else(|| "-".to_owned(), when);
        let created = when(k.created_at);
        let spent = if k.limits.any() {
            format!(
                "{:.6} USD, {} tokens, {} running",
                k.spend.spent_usd, k.spend.spent_tokens, k.spend.running
            )
        } else {
            "-".to_owned()
        };
        println!(
            "{:<36}  {:<16}  {:<16}  {:<20}  {:<40}  {spent:<36}  {revoked}",
            k.id,
            k.owner,
            k.name,
            created.get(..19).unwrap_or(&created),
            describe(&k.limits),
        );
    }
    eprintln!("{} key(s)", keys.len());
    Ok(())
}

/// The limits as the flags that set them (`none` without any).
fn describe(l: &KeyLimits) -> String {
    let mut out = Vec::new();
    if let Some(n) = l.rpm {
        out.push(format!("--rpm {n}"));
    }
    if let Some(n) = l.tpm {
        out.push(format!("--tpm {n}"));
    }
    if let Some(n) = l.concurrency {
        out.push(format!("--concurrency {n}"));
    }
    if let Some(x) = l.budget_usd {
        out.push(format!("--budget-usd {x}"));
    }
    if let Some(n) = l.budget_tokens {
        out.push(format!("--budget-tokens {n}"));
    }
    if l.budget_usd.is_some() || l.budget_tokens.is_some() {
        out.push(format!("--period {}", l.period.as_str()));
    }
    if out.is_empty() {
        "none".to_owned()
    } else {
        out.join(" ")
    }
}

/// The positional arguments, the limits the flags name, and whether `--clear` was given.
/// Unknown flags and bad values are errors.
fn parse(args: &[String]) -> anyhow::Result<(Vec<String>, KeyLimits, bool)> {
    let mut positional = Vec::new();
    let mut limits = KeyLimits::default();
    let mut clear = false;
    let mut period = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if arg.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        if !flag.starts_with("--") {
            positional.push(arg.clone());
            continue;
        }
        if flag == "--clear" {
            clear = true;
            continue;
        }
        let known = [
            "--rpm",
            "--tpm",
            "--concurrency",
            "--budget-usd",
            "--budget-tokens",
            "--period",
        ];
        if !known.contains(&flag) {
            bail!("unknown option {flag}\n{USAGE}");
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?,
        };
        let count = |max: i64| -> anyhow::Result<i64> {
            match value.trim().parse::<i64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => bail!("{flag} takes a whole number from 1 to {max}, not {value:?}"),
            }
        };
        match flag {
            "--rpm" => limits.rpm = Some(count(i64::from(i32::MAX))? as i32),
            "--tpm" => limits.tpm = Some(count(i64::MAX)?),
            "--concurrency" => limits.concurrency = Some(count(i64::from(i32::MAX))? as i32),
            "--budget-tokens" => limits.budget_tokens = Some(count(i64::MAX)?),
            "--budget-usd" => {
                limits.budget_usd = Some(match value.trim().parse::<f64>() {
                    Ok(x) if (0.0..1e15).contains(&x) => x,
                    _ => bail!("--budget-usd takes an amount in USD (0.50), not {value:?}"),
                });
            }
            _ => {
                period = Some(Period::parse(value.trim()).with_context(|| {
                    format!("--period takes day, month or total, not {value:?}")
                })?);
            }
        }
    }
    if let Some(p) = period {
        if limits.budget_usd.is_none() && limits.budget_tokens.is_none() {
            bail!("--period is the period of a budget: name --budget-usd or --budget-tokens");
        }
        limits.period = p;
    }
    Ok((positional, limits, clear))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags_parse_and_unknown_ones_are_refused() {
        let (pos, l, clear) =
            parse(&args("alice laptop --rpm 5 --budget-usd=0.5 --period day")).unwrap();
        assert_eq!(pos, ["alice", "laptop"]);
        assert_eq!(
            (l.rpm, l.budget_usd, l.period),
            (Some(5), Some(0.5), Period::Day)
        );
        assert!(!clear);
        for bad in [
            "alice --rmp 5",
            "alice --rpm",
            "alice --rpm 0",
            "alice --rpm x",
            "alice --budget-usd -1",
            "alice --period week --budget-usd 1",
            "alice --period day",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }
}
