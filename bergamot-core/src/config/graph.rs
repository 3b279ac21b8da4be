//! Cycle detection for the group graph, the location tree, template
//! inheritance and check dependencies.

/// Finds cycles in a directed graph of `n` nodes given by `edges(node)`.
///
/// Iterative depth-first search (dependency chains can be long; no recursion).
/// Returns one node path per back edge found, each starting and ending at the
/// same node (`[a, b, a]`); every cycle of the graph has at least one of its
/// nodes on a reported path.
pub(super) fn find_cycles<'e>(n: usize, edges: impl Fn(usize) -> &'e [usize]) -> Vec<Vec<usize>> {
    const WHITE: u8 = 0;
    const GRAY: u8 = 1;
    const BLACK: u8 = 2;
    let mut color = vec![WHITE; n];
    let mut cycles = Vec::new();
    // The current path, with the index of the next edge to follow per node.
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in 0..n {
        if color[root] != WHITE {
            continue;
        }
        color[root] = GRAY;
        stack.push((root, 0));
        while let Some(top) = stack.last_mut() {
            let (node, next) = *top;
            let out = edges(node);
            if next < out.len() {
                top.1 += 1;
                let to = out[next];
                match color.get(to).copied() {
                    Some(WHITE) => {
                        color[to] = GRAY;
                        stack.push((to, 0));
                    }
                    Some(GRAY) => {
                        let from = stack.iter().position(|(v, _)| *v == to).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|(v, _)| *v).collect();
                        cycle.push(to);
                        cycles.push(cycle);
                    }
                    _ => {}
                }
            } else {
                color[node] = BLACK;
                stack.pop();
            }
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycles(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
        find_cycles(adj.len(), |i| &adj[i])
    }

    #[test]
    fn acyclic_graphs_have_no_cycles() {
        assert!(cycles(&[vec![1, 2], vec![2], vec![]]).is_empty());
        assert!(cycles(&[]).is_empty());
        // A diamond is not a cycle.
        assert!(cycles(&[vec![1, 2], vec![3], vec![3], vec![]]).is_empty());
    }

    #[test]
    fn finds_cycles() {
        assert_eq!(cycles(&[vec![0]]), vec![vec![0, 0]]);
        assert_eq!(cycles(&[vec![1], vec![2], vec![0]]), vec![vec![0, 1, 2, 0]]);
        assert_eq!(cycles(&[vec![1], vec![2], vec![1]]), vec![vec![1, 2, 1]]);
    }

    #[test]
    fn long_chain_does_not_overflow() {
        let n = 200_000;
        let adj: Vec<Vec<usize>> = (0..n)
            .map(|i| if i + 1 < n { vec![i + 1] } else { vec![0] })
            .collect();
        let found = cycles(&adj);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].len(), n + 1);
    }
}
