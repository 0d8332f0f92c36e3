//! Rail 3: a function over 120 lines needs a stated reason.
//!
//! Clippy does the counting (`too_many_lines` at "warn" in the root Cargo.toml,
//! `too-many-lines-threshold` in clippy.toml, and `-D warnings` in `cargo xtask test`); this rail
//! keeps that honest: it refuses `#[allow(clippy::too_many_lines)]` (which stays silent when the
//! function shrinks or hides why), an `#[expect(..)]` of it without `reason = ".."`, silencing the
//! whole `clippy::pedantic` group (which includes it), a weaker workspace level, a higher
//! threshold, and a member clippy checks that does not take the workspace's lints. It reads every
//! `.rs` file of every member: clippy lints tests and examples too.

use anyhow::{Context as _, Result};
use syn::{
    Attribute, ImplItem, Item, Meta, Token, TraitItem, punctuated::Punctuated, spanned::Spanned,
    visit::Visit,
};

use super::{
    Finding, Rail,
    workspace::{Workspace, rust_files},
};

pub const MAX_FN_LINES: u64 = 120;
const LINT: &str = "clippy::too_many_lines";

pub fn check(ws: &Workspace) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let read = |name: &str| std::fs::read_to_string(ws.root.join(name)).ok();
    let manifest = read("Cargo.toml").context("reading the workspace's Cargo.toml")?;
    let clippy_toml = read("clippy.toml").or_else(|| read(".clippy.toml"));
    findings.extend(config_findings(&manifest, clippy_toml.as_deref())?);
    for member in &ws.members {
        let manifest_path = member.dir.join("Cargo.toml");
        let manifest = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        let table: toml::Table = toml::from_str(&manifest)
            .with_context(|| format!("parsing {}", manifest_path.display()))?;
        if member.linted
            && !table
                .get("lints")
                .and_then(|l| l.get("workspace"))
                .and_then(toml::Value::as_bool)
                .unwrap_or(false)
        {
            findings.push(Finding {
                rail: Rail::TooManyLines,
                subject: ws.relative(&manifest_path),
                count: 0,
                limit: 1,
                message: "the crate does not take the workspace's lints, so clippy's \
                          too_many_lines (and the rest) do not apply to it"
                    .to_owned(),
                fix: "add `[lints]` with `workspace = true` to its Cargo.toml".to_owned(),
            });
        }
        for file in rust_files(&member.dir)? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            findings.extend(attribute_findings(&ws.relative(&file), &text)?);
        }
    }
    Ok(findings)
}

/// The workspace lint level and clippy's threshold.
pub fn config_findings(manifest: &str, clippy_toml: Option<&str>) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let manifest: toml::Table = toml::from_str(manifest).context("parsing Cargo.toml")?;
    let level = manifest
        .get("workspace")
        .and_then(|w| w.get("lints"))
        .and_then(|l| l.get("clippy"))
        .and_then(|c| c.get("too_many_lines"))
        .and_then(|v| {
            v.as_str()
                .or_else(|| v.get("level").and_then(toml::Value::as_str))
        });
    if !matches!(level, Some("warn" | "deny" | "forbid")) {
        findings.push(Finding {
            rail: Rail::TooManyLines,
            subject: "Cargo.toml [workspace.lints.clippy]".to_owned(),
            count: 0,
            limit: 1,
            message: format!(
                "too_many_lines is {}, so clippy does not count function lengths",
                level.map_or_else(
                    || "not set (pedantic's level applies)".to_owned(),
                    |l| format!("\"{l}\"")
                )
            ),
            fix: "set `too_many_lines = \"warn\"` (cargo xtask test denies warnings)".to_owned(),
        });
    }
    let threshold = clippy_toml
        .map(|t| toml::from_str::<toml::Table>(t).context("parsing clippy.toml"))
        .transpose()?
        .and_then(|t| {
            t.get("too-many-lines-threshold")
                .and_then(toml::Value::as_integer)
        });
    // Clippy's default threshold (100) is within the limit.
    let threshold = threshold.unwrap_or(100);
    if threshold > MAX_FN_LINES as i64 {
        findings.push(Finding {
            rail: Rail::TooManyLines,
            subject: "clippy.toml".to_owned(),
            count: threshold as u64,
            limit: MAX_FN_LINES,
            message: format!(
                "too-many-lines-threshold is {threshold}, the rails allow at most {MAX_FN_LINES}"
            ),
            fix: format!("set `too-many-lines-threshold = {MAX_FN_LINES}` in the root clippy.toml"),
        });
    }
    Ok(findings)
}

/// The attributes of one file that silence `too_many_lines` without a stated reason.
pub fn attribute_findings(file: &str, text: &str) -> Result<Vec<Finding>> {
    let ast = syn::parse_file(text).with_context(|| format!("parsing {file}"))?;
    let mut v = AttrVisitor {
        file,
        findings: Vec::new(),
    };
    let lines = text.lines().count() as u64;
    v.check(&ast.attrs, "the whole file", lines);
    v.visit_file(&ast);
    Ok(v.findings)
}

struct AttrVisitor<'f> {
    file: &'f str,
    findings: Vec<Finding>,
}

impl AttrVisitor<'_> {
    /// `attrs` sit on `what`, which spans `lines` source lines.
    fn check(&mut self, attrs: &[Attribute], what: &str, lines: u64) {
        for attr in attrs {
            for (refused, why) in silences(&attr.meta) {
                let line = attr.span().start().line;
                self.findings.push(Finding {
                    rail: Rail::TooManyLines,
                    subject: format!("{}:{line} ({what}, {lines} lines)", self.file),
                    count: lines,
                    limit: MAX_FN_LINES,
                    message: format!("`{refused}`: {why}"),
                    fix: format!(
                        "split the function below {MAX_FN_LINES} lines, or write \
                         `#[expect({LINT}, reason = \"why it is long\")]` on it"
                    ),
                });
            }
        }
    }

    fn check_spanned(&mut self, attrs: &[Attribute], what: &str, node: &dyn Spanned) {
        let span = node.span();
        let lines = (span.end().line + 1).saturating_sub(span.start().line) as u64;
        self.check(attrs, what, lines);
    }
}

impl<'ast> Visit<'ast> for AttrVisitor<'_> {
    fn visit_item(&mut self, item: &'ast Item) {
        let described = match item {
            Item::Fn(i) => Some((&i.attrs, format!("fn {}", i.sig.ident))),
            Item::Mod(i) => Some((&i.attrs, format!("mod {}", i.ident))),
            Item::Impl(i) => Some((&i.attrs, "impl block".to_owned())),
            Item::Trait(i) => Some((&i.attrs, format!("trait {}", i.ident))),
            _ => None,
        };
        if let Some((attrs, what)) = described {
            self.check_spanned(attrs, &what, item);
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_impl_item(&mut self, item: &'ast ImplItem) {
        if let ImplItem::Fn(f) = item {
            self.check_spanned(&f.attrs, &format!("fn {}", f.sig.ident), item);
        }
        syn::visit::visit_impl_item(self, item);
    }

    fn visit_trait_item(&mut self, item: &'ast TraitItem) {
        if let TraitItem::Fn(f) = item {
            self.check_spanned(&f.attrs, &format!("fn {}", f.sig.ident), item);
        }
        syn::visit::visit_trait_item(self, item);
    }
}

/// What in one attribute silences the lint without a reason: `(what was written, why refused)`.
fn silences(meta: &Meta) -> Vec<(String, &'static str)> {
    let Meta::List(list) = meta else {
        return Vec::new();
    };
    let Ok(nested) = list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated) else {
        return Vec::new();
    };
    let kind = list
        .path
        .get_ident()
        .map(ToString::to_string)
        .unwrap_or_default();
    let names = |m: &Meta| {
        m.path()
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect::<Vec<_>>()
            .join("::")
    };
    let mut out = Vec::new();
    match kind.as_str() {
        // cfg_attr(predicate, attr, ..): the attributes after the predicate.
        "cfg_attr" => {
            for m in nested.iter().skip(1) {
                out.extend(silences(m));
            }
        }
        "allow" | "expect" => {
            let has_reason = nested.iter().any(|m| match m {
                Meta::NameValue(nv) if nv.path.is_ident("reason") => matches!(
                    &nv.value,
                    syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) if !s.value().trim().is_empty()
                ),
                _ => false,
            });
            for m in &nested {
                let name = names(m);
                let written = format!("#[{kind}({name})]");
                if name == "clippy::pedantic" {
                    out.push((
                        written,
                        "silences the whole pedantic group, too_many_lines with it; name the \
                         one lint you mean",
                    ));
                } else if name == LINT && kind == "allow" {
                    out.push((
                        written,
                        "allow stays silent once the function shrinks and says nothing of why",
                    ));
                } else if name == LINT && !has_reason {
                    out.push((
                        written,
                        "an expect of too_many_lines needs `reason = \"..\"`",
                    ));
                }
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Vec<String> {
        attribute_findings("f.rs", text)
            .expect("parses")
            .into_iter()
            .map(|f| format!("{} {}", f.subject, f.message))
            .collect()
    }

    #[test]
    fn an_expect_with_a_reason_passes() {
        let text = "#[expect(clippy::too_many_lines, reason = \"one table\")]\nfn f() {}\n\
                    #[allow(clippy::too_many_arguments)]\nfn g() {}\n";
        assert_eq!(refused(text), Vec::<String>::new());
    }

    #[test]
    fn allow_and_reasonless_expect_are_refused_wherever_they_sit() {
        let text = "#![allow(clippy::pedantic)]\n\
                    #[allow(clippy::too_many_lines)]\nfn f() {\n}\n\
                    impl S {\n    #[expect(clippy::too_many_lines)]\n    fn g() {}\n}\n\
                    mod m {\n    #[cfg_attr(test, allow(clippy::too_many_lines))]\n    fn h() {}\n}\n\
                    trait T {\n    #[expect(clippy::too_many_lines, reason = \"\")]\n    fn t() {}\n}\n";
        let found = refused(text);
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(
            found[0].starts_with("f.rs:1 (the whole file, 16 lines)"),
            "{}",
            found[0]
        );
        assert!(
            found[1].starts_with("f.rs:2 (fn f, 3 lines)"),
            "{}",
            found[1]
        );
        assert!(
            found[2].starts_with("f.rs:6 (fn g, 2 lines)"),
            "{}",
            found[2]
        );
        assert!(found[3].contains("fn h"), "{}", found[3]);
        assert!(found[4].contains("fn t"), "{}", found[4]);
    }

    #[test]
    fn the_workspace_config_is_checked() {
        let good = "[workspace.lints.clippy]\ntoo_many_lines = \"warn\"\n";
        let threshold = "too-many-lines-threshold = 120\n";
        assert!(
            config_findings(good, Some(threshold))
                .expect("parses")
                .is_empty()
        );
        let allowed = "[workspace.lints.clippy]\ntoo_many_lines = \"allow\"\n";
        assert_eq!(
            config_findings(allowed, Some(threshold))
                .expect("parses")
                .len(),
            1
        );
        let table =
            "[workspace.lints.clippy]\ntoo_many_lines = { level = \"deny\", priority = 1 }\n";
        assert!(
            config_findings(table, Some(threshold))
                .expect("parses")
                .is_empty()
        );
        let high = "too-many-lines-threshold = 200\n";
        let found = config_findings(good, Some(high)).expect("parses");
        assert_eq!((found[0].count, found[0].limit), (200, 120));
        // Clippy's default (100) is within the limit.
        assert!(config_findings(good, None).expect("parses").is_empty());
    }

    #[test]
    fn the_repositorys_config_passes() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let read = |f: &str| std::fs::read_to_string(root.join(f)).expect("readable");
        let found =
            config_findings(&read("Cargo.toml"), Some(&read("clippy.toml"))).expect("parses");
        assert!(found.is_empty(), "{found:#?}");
    }
}
