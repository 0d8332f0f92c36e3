//! Strongly connected components (Tarjan) and a set of cycles that shows every edge of one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{ModPath, Reference};

pub type Edges<'a> = BTreeMap<(ModPath, ModPath), &'a Reference>;

fn successors<'e>(edges: &'e Edges<'_>, node: &'e ModPath) -> impl Iterator<Item = &'e ModPath> {
    edges
        .keys()
        .filter(move |(from, _)| from == node)
        .map(|(_, to)| to)
}

/// Tarjan's strongly connected components with more than one module (sorted members).
pub fn strongly_connected(edges: &Edges<'_>) -> Vec<Vec<ModPath>> {
    struct State<'e, 'r> {
        edges: &'e Edges<'r>,
        index: BTreeMap<&'e ModPath, usize>,
        low: BTreeMap<&'e ModPath, usize>,
        stack: Vec<&'e ModPath>,
        on_stack: BTreeSet<&'e ModPath>,
        out: Vec<Vec<ModPath>>,
    }
    fn visit<'e>(s: &mut State<'e, '_>, v: &'e ModPath) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in successors(s.edges, v) {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let nodes: BTreeSet<&ModPath> = edges.keys().flat_map(|(a, b)| [a, b]).collect();
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

/// Cycles that together use every edge inside `component`: for each edge `u → v`, the edge and
/// the shortest way back from `v` to `u`; each cycle once, starting at its smallest module.
pub fn covering_cycles(component: &[ModPath], edges: &Edges<'_>) -> Vec<Vec<ModPath>> {
    let inside: BTreeSet<&ModPath> = component.iter().collect();
    let mut cycles = BTreeSet::new();
    for (u, v) in edges.keys() {
        if !inside.contains(u) || !inside.contains(v) {
            continue;
        }
        // Breadth-first from v back to u, inside the component.
        let mut came_from: BTreeMap<&ModPath, &ModPath> = BTreeMap::new();
        let mut queue = VecDeque::from([v]);
        while let Some(x) = queue.pop_front() {
            if x == u {
                break;
            }
            for y in successors(edges, x) {
                if inside.contains(y) && y != v && !came_from.contains_key(y) {
                    came_from.insert(y, x);
                    queue.push_back(y);
                }
            }
        }
        let mut path = vec![u.clone()];
        let mut x = u;
        while x != v {
            x = came_from[x];
            path.push(x.clone());
        }
        path.reverse(); // v .. u
        path.rotate_right(1); // u, v, .., (back to u)
        let start = (0..path.len()).min_by_key(|&i| &path[i]).unwrap_or(0);
        path.rotate_left(start);
        cycles.insert(path);
    }
    cycles.into_iter().collect()
}
