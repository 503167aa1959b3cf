//! Linking several PTX modules into one program, as `nvcc -rdc=true` device code and the
//! JIT linker (`cuLink*`) do: `.extern` functions, variables and shared variables resolve
//! to another module's definition; a strong (`.visible`) definition overrides `.weak` and
//! `.common` ones (of several `.common` definitions the largest wins); two strong
//! definitions of one name are refused with the name and both modules. Symbols without
//! linkage stay private to their module (they are renamed apart, so two modules' `$str`
//! printf strings do not collide).
//!
//! Errors name the module (its index in the list) and the line in it.

use std::collections::{HashMap, HashSet};

use crate::ast::{self, Function, Linkage, Operand, Stmt, VarDecl};
use crate::error::LoadError;
use crate::parse::parse;

/// Lines of module `k` are numbered from `k * LINE_STRIDE` while the modules are linked,
/// so an error can name its module.
const LINE_STRIDE: usize = 1 << 40;

/// Names an error's module and line in it.
pub(crate) fn locate(mut e: LoadError, modules: usize) -> LoadError {
    if modules > 1 || e.line >= LINE_STRIDE {
        let k = e.line / LINE_STRIDE;
        e.module = Some(k);
        e.line %= LINE_STRIDE;
    }
    e
}

fn shift_lines(m: &mut ast::Module, base: usize) {
    for v in &mut m.vars {
        v.line += base;
    }
    for f in &mut m.functions {
        f.line += base;
        for p in f.params.iter_mut().chain(f.rets.iter_mut()) {
            p.line += base;
        }
        for s in f.body.iter_mut().flatten() {
            match s {
                Stmt::Reg { line, .. } | Stmt::Label(_, line) => *line += base,
                Stmt::Var(v) => v.line += base,
                Stmt::Inst(i) => i.line += base,
                Stmt::Open | Stmt::Close => {}
            }
        }
    }
}

/// Names a function declares itself (parameters, registers, variables, labels): module
/// symbols of the same name are shadowed there.
fn local_names(f: &Function) -> HashSet<&str> {
    let mut out: HashSet<&str> = f
        .params
        .iter()
        .chain(&f.rets)
        .map(|p| p.name.as_str())
        .collect();
    for s in f.body.iter().flatten() {
        match s {
            Stmt::Reg { names, .. } => out.extend(names.iter().map(|(n, _)| n.as_str())),
            Stmt::Var(v) => {
                out.insert(v.name.as_str());
            }
            Stmt::Label(l, _) => {
                out.insert(l.as_str());
            }
            _ => {}
        }
    }
    out
}

fn rename_operand(o: &mut Operand, map: &HashMap<String, String>, local: &HashSet<String>) {
    match o {
        Operand::Sym(s) if !local.contains(s.as_str()) => {
            if let Some(n) = map.get(s.as_str()) {
                *s = n.clone();
            }
        }
        Operand::Mem(b, _) => rename_operand(b, map, local),
        Operand::Vec(v) | Operand::List(v) => {
            v.iter_mut().for_each(|o| rename_operand(o, map, local))
        }
        _ => {}
    }
}

/// Gives module `k`'s private symbols names no other module can have.
fn rename_private(m: &mut ast::Module, k: usize) {
    let mut map = HashMap::new();
    for v in &m.vars {
        if v.linkage == Linkage::Internal {
            map.insert(v.name.clone(), format!("{}.{k}", v.name));
        }
    }
    for f in &m.functions {
        if f.linkage == Linkage::Internal && !f.entry {
            map.insert(f.name.clone(), format!("{}.{k}", f.name));
        }
    }
    if map.is_empty() {
        return;
    }
    for v in &mut m.vars {
        if let Some(n) = map.get(&v.name) {
            v.name = n.clone();
        }
        for (_, s, _) in &mut v.init_syms {
            if let Some(n) = map.get(s.as_str()) {
                *s = n.clone();
            }
        }
    }
    for f in &mut m.functions {
        if let Some(n) = map.get(&f.name) {
            f.name = n.clone();
        }
        let local: HashSet<String> = local_names(f).into_iter().map(String::from).collect();
        for s in f.body.iter_mut().flatten() {
            if let Stmt::Inst(i) = s {
                i.operands
                    .iter_mut()
                    .for_each(|o| rename_operand(o, &map, &local));
            }
        }
    }
}

fn duplicate(name: &str, a: usize, b: usize, line: usize) -> LoadError {
    LoadError::invalid(
        line,
        format!("{name} is defined in module {a} and in module {b} (duplicate definition)"),
    )
}

/// Parses and merges `ptx` into one module (before decoding).
pub(crate) fn link_ast(ptx: &[&str]) -> Result<ast::Module, LoadError> {
    let mut mods = Vec::with_capacity(ptx.len());
    for (k, text) in ptx.iter().enumerate() {
        let mut m = parse(text.trim_end_matches('\0')).map_err(|mut e| {
            e.line += k * LINE_STRIDE;
            e
        })?;
        shift_lines(&mut m, k * LINE_STRIDE);
        rename_private(&mut m, k);
        mods.push(m);
    }
    let mut out = ast::Module {
        version: mods.iter().map(|m| m.version).max().unwrap_or(0),
        target: mods.iter().map(|m| m.target).max().unwrap_or(0),
        ..Default::default()
    };
    // Functions: one definition per name.
    let mut chosen: HashMap<String, (usize, Function)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for (k, m) in mods.iter_mut().enumerate() {
        for f in std::mem::take(&mut m.functions) {
            if f.body.is_none() {
                continue; // a declaration: resolved to the definition, if any
            }
            match chosen.get(&f.name) {
                None => {
                    order.push(f.name.clone());
                    chosen.insert(f.name.clone(), (k, f));
                }
                Some((k0, g)) => {
                    let weak = |l: Linkage| matches!(l, Linkage::Weak | Linkage::Common);
                    match (weak(g.linkage), weak(f.linkage)) {
                        (_, true) => {} // keep the first weak, or the strong one
                        (true, false) => {
                            chosen.insert(f.name.clone(), (k, f));
                        }
                        (false, false) => return Err(duplicate(&f.name, *k0, k, f.line)),
                    }
                }
            }
        }
    }
    for name in order {
        if let Some((_, f)) = chosen.remove(&name) {
            out.functions.push(f);
        }
    }
    // Variables: the same rules; `.common` takes the largest definition; unsized extern
    // shared arrays (dynamic shared memory) are one per name.
    let mut vars: HashMap<String, (usize, VarDecl)> = HashMap::new();
    let mut vorder: Vec<String> = Vec::new();
    let mut externs: Vec<(usize, VarDecl)> = Vec::new();
    for (k, m) in mods.iter_mut().enumerate() {
        for v in std::mem::take(&mut m.vars) {
            let dynamic_shared = v.space == ast::Space::Shared && v.count == Some(0);
            if v.linkage == Linkage::Extern && !dynamic_shared {
                externs.push((k, v));
                continue;
            }
            match vars.get(&v.name) {
                None => {
                    vorder.push(v.name.clone());
                    vars.insert(v.name.clone(), (k, v));
                }
                Some((_, w)) if dynamic_shared && w.count == Some(0) => {}
                Some((k0, w)) => {
                    let (wl, vl) = (w.linkage, v.linkage);
                    let replace = match (wl, vl) {
                        (Linkage::Common, Linkage::Common) => v.size() > w.size(),
                        (Linkage::Weak | Linkage::Common, Linkage::Visible | Linkage::Internal) => {
                            true
                        }
                        (_, Linkage::Weak | Linkage::Common) => false,
                        _ => return Err(duplicate(&v.name, *k0, k, v.line)),
                    };
                    if replace {
                        vars.insert(v.name.clone(), (k, v));
                    }
                }
            }
        }
    }
    for (_, v) in &externs {
        if !vars.contains_key(&v.name) {
            return Err(LoadError::invalid(
                v.line,
                format!(
                    "unresolved external variable {} (no module defines it)",
                    v.name
                ),
            ));
        }
    }
    for name in vorder {
        if let Some((_, mut v)) = vars.remove(&name) {
            if v.linkage == Linkage::Extern {
                v.linkage = Linkage::Visible;
            }
            out.vars.push(v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_symbols_are_renamed_apart_and_shadowing_is_kept() {
        let a = ".global .b8 s[2] = {1, 2};\n.visible .entry k() {\n.reg .b64 %rd<2>;\nmov.u64 %rd1, s;\nret;\n}\n";
        let b = ".global .b8 s[3];\n.visible .entry j() {\n.local .b8 s[4];\n.reg .b64 %rd<2>;\nmov.u64 %rd1, s;\nret;\n}\n";
        let m = link_ast(&[a, b]).unwrap();
        let names: Vec<&str> = m.vars.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["s.0", "s.1"]);
        let op = |f: usize| {
            m.functions[f]
                .body
                .iter()
                .flatten()
                .find_map(|s| match s {
                    Stmt::Inst(i) if i.opcode == "mov.u64" => Some(i.operands[1].clone()),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(op(0), Operand::Sym("s.0".into()));
        // j's own .local s shadows the module's.
        assert_eq!(op(1), Operand::Sym("s".into()));
    }

    #[test]
    fn errors_name_the_module_and_its_line() {
        let e = link_ast(&[".version 8.0\n", ".version 8.0\n.bogus;\n"]).unwrap_err();
        let e = locate(e, 2);
        assert_eq!((e.module, e.line), (Some(1), 2));
        assert!(e.to_string().contains("module 1"), "{e}");
    }
}
