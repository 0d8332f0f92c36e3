//! Reading one file: the modules it declares and the paths it names (outside test code).

use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::{
    Attribute, ImplItem, Item, ItemMod, Meta, Token, TraitItem, UseTree, ext::IdentExt as _,
    punctuated::Punctuated, visit::Visit,
};

use super::{ModPath, Reference};

/// Walks one file: its module declarations and the paths it names.
pub struct Collector {
    file: PathBuf,
    /// The file's module.
    module: ModPath,
    /// Whether the file's children live in its own directory (crate roots, `mod.rs`).
    mod_rs: bool,
    /// Inline modules entered, inside the file.
    inline: Vec<String>,
    /// `(from module, path segments, where)`.
    pub references: Vec<(ModPath, Vec<String>, Reference)>,
    /// `(candidate files, module, mod_rs)` for each `mod x;`.
    pub children: Vec<(Vec<PathBuf>, ModPath, bool)>,
    pub known: Vec<ModPath>,
}

impl Collector {
    pub fn new(file: PathBuf, module: ModPath, mod_rs: bool) -> Self {
        Self {
            file,
            module,
            mod_rs,
            inline: Vec::new(),
            references: Vec::new(),
            children: Vec::new(),
            known: Vec::new(),
        }
    }

    fn current(&self) -> ModPath {
        let mut m = self.module.clone();
        m.extend(self.inline.iter().cloned());
        m
    }

    fn record(&mut self, segments: Vec<String>, line: usize) {
        if segments.len() < 2 || !matches!(segments[0].as_str(), "crate" | "self" | "super") {
            return;
        }
        let reference = Reference {
            file: self.file.clone(),
            line,
            path: segments.join("::"),
        };
        self.references.push((self.current(), segments, reference));
    }

    /// Where `mod name;` (here, inside the current inline modules) lives.
    fn child_files(&self, item: &ItemMod, name: &str) -> (Vec<PathBuf>, bool) {
        let here = self.file.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut dir = if self.mod_rs || (self.inline.is_empty() && path_attr(&item.attrs).is_some())
        {
            here
        } else {
            let stem = self.file.file_stem().unwrap_or_default();
            here.join(stem)
        };
        dir.extend(&self.inline);
        if let Some(path) = path_attr(&item.attrs) {
            return (vec![dir.join(path)], true);
        }
        (
            vec![
                dir.join(format!("{name}.rs")),
                dir.join(name).join("mod.rs"),
            ],
            false,
        )
    }
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, item: &'ast Item) {
        if !test_only(item_attrs(item)) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_impl_item(&mut self, item: &'ast ImplItem) {
        let attrs = match item {
            ImplItem::Const(i) => &i.attrs,
            ImplItem::Fn(i) => &i.attrs,
            ImplItem::Type(i) => &i.attrs,
            ImplItem::Macro(i) => &i.attrs,
            _ => return syn::visit::visit_impl_item(self, item),
        };
        if !test_only(attrs) {
            syn::visit::visit_impl_item(self, item);
        }
    }

    fn visit_trait_item(&mut self, item: &'ast TraitItem) {
        let attrs = match item {
            TraitItem::Const(i) => &i.attrs,
            TraitItem::Fn(i) => &i.attrs,
            TraitItem::Type(i) => &i.attrs,
            TraitItem::Macro(i) => &i.attrs,
            _ => return syn::visit::visit_trait_item(self, item),
        };
        if !test_only(attrs) {
            syn::visit::visit_trait_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, item: &'ast ItemMod) {
        let name = item.ident.unraw().to_string();
        let mut module = self.current();
        module.push(name.clone());
        self.known.push(module.clone());
        match &item.content {
            None => {
                let (candidates, mod_rs) = self.child_files(item, &name);
                self.children.push((candidates, module, mod_rs));
            }
            Some((_, items)) => {
                self.inline.push(name);
                for i in items {
                    self.visit_item(i);
                }
                self.inline.pop();
            }
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let mut found = Vec::new();
        flatten_use(&item.tree, &mut Vec::new(), &mut found);
        for (segments, line) in found {
            self.record(segments, line);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path
            .segments
            .iter()
            .map(|s| s.ident.unraw().to_string())
            .collect();
        if let Some(last) = path.segments.last() {
            self.record(segments, last.ident.span().start().line);
        }
        syn::visit::visit_path(self, path);
    }

    /// `pub(in crate::x)` names a module without using it.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        for (segments, line) in token_paths(mac.tokens.clone()) {
            self.record(segments, line);
        }
    }
}

/// Every path of a `use` tree with the line of its last segment (`{self, ..}` names the prefix).
fn flatten_use(tree: &UseTree, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, usize)>) {
    match tree {
        UseTree::Path(p) => {
            prefix.push(p.ident.unraw().to_string());
            flatten_use(&p.tree, prefix, out);
            prefix.pop();
        }
        UseTree::Name(n) => {
            let mut path = prefix.clone();
            if n.ident != "self" {
                path.push(n.ident.unraw().to_string());
            }
            out.push((path, n.ident.span().start().line));
        }
        UseTree::Rename(r) => {
            let mut path = prefix.clone();
            if r.ident != "self" {
                path.push(r.ident.unraw().to_string());
            }
            out.push((path, r.ident.span().start().line));
        }
        UseTree::Glob(g) => out.push((prefix.clone(), g.star_token.span.start().line)),
        UseTree::Group(g) => {
            for t in &g.items {
                flatten_use(t, prefix, out);
            }
        }
    }
}

/// `crate::a::b`-like paths inside a macro's tokens (`assert!(crate::a::f())`), which syn leaves
/// unparsed.
fn token_paths(tokens: TokenStream) -> Vec<(Vec<String>, usize)> {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Group(g) => out.extend(token_paths(g.stream())),
            TokenTree::Ident(id)
                if matches!(id.to_string().as_str(), "crate" | "self" | "super") =>
            {
                let mut segments = vec![id.to_string()];
                let mut line = id.span().start().line;
                while let (
                    Some(TokenTree::Punct(a)),
                    Some(TokenTree::Punct(b)),
                    Some(TokenTree::Ident(next)),
                ) = (tokens.get(i + 1), tokens.get(i + 2), tokens.get(i + 3))
                    && a.as_char() == ':'
                    && b.as_char() == ':'
                {
                    segments.push(next.unraw().to_string());
                    line = next.span().start().line;
                    i += 3;
                }
                if segments.len() > 1 {
                    out.push((segments, line));
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// `#[cfg(test)]` (or a `cfg` that needs `test`) or a test function (`#[test]`, `#[tokio::test]`).
fn test_only(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| {
        let path = a.path();
        if path.segments.last().is_some_and(|s| s.ident == "test") {
            return true;
        }
        path.is_ident("cfg") && a.parse_args::<Meta>().is_ok_and(|m| needs_test(&m))
    })
}

fn needs_test(predicate: &Meta) -> bool {
    let nested = |m: &syn::MetaList| {
        m.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
            .map(|p| p.into_iter().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    match predicate {
        Meta::Path(p) => p.is_ident("test"),
        Meta::List(m) if m.path.is_ident("all") => nested(m).iter().any(needs_test),
        Meta::List(m) if m.path.is_ident("any") => {
            let options = nested(m);
            !options.is_empty() && options.iter().all(needs_test)
        }
        _ => false,
    }
}

fn path_attr(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}
