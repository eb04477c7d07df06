"""count_profile.py WORKLOAD SEED [N] [-v]: where the count stage's CPU goes (one thread).

Run from the repository root, under the heavy lock:
``PYTHONPATH=$PWD flock /tmp/mc-heavy.lock .venv/bin/python tools/count_profile.py trace 7 -v``.
Prints the plan's tiers and the count stage's CPU (time.process_time), then for the two
slowest components the CPU per call site (tier LPs, the count-only LP, each repair and the
neighbourhood rounds, split into those that placed a job more, "ok", and misses); with -v
every call slower than 0.05 s, with its free variables, nodes and HiGHS status.
"""
import sys, time, json, math
sys.path.insert(0, '.')
from collections import defaultdict
from bench.planner import make_jobs, catalog_offers, snapshot, ROFR, tier_counts
from multicloud.planner import plan, Policy
from multicloud.planner import milp, count as C, search as S
import numpy as np
args = [a for a in sys.argv[1:] if a != "-v"]; wl, seed = args[0], int(args[1]); n = int(args[2]) if len(args) > 2 else 10000
verbose = '-v' in sys.argv
comps = []
cur = {}
def lineof(fr):
    return fr.f_code.co_name + ':' + str(fr.f_lineno)
orig_ct = C.count_tiers
def ct(planner, comp, *a, **k):
    c = {'jobs': len(comp), 'events': [], 'tier': None}; cur['c'] = c
    t0 = time.process_time(); r = orig_ct(planner, comp, *a, **k)
    c['total'] = time.process_time() - t0; c['best'] = r.best; comps.append(c); cur['c'] = None
    return r
C.count_tiers = ct
milp.count_tiers = ct
orig_relax = S.Search.relax
def relax(self, objective, keep=None, out=None):
    c = cur.get('c'); t0 = time.process_time()
    r = orig_relax(self, objective, keep, out)
    if c is not None:
        c['events'].append(('relax', lineof(sys._getframe(1)), time.process_time() - t0, {'val': r[1]}))
    return r
S.Search.relax = relax
orig_imp = S.Search.improve
def improve(self, objective, lp, inc, good, scope=None, **k):
    c = cur.get('c'); t0 = time.process_time()
    v0 = float(objective @ np.where(scope, inc, 0) if scope is not None else objective @ inc)
    r = orig_imp(self, objective, lp, inc, good, scope, **k)
    if c is not None:
        c['events'].append(('improve', lineof(sys._getframe(1)), time.process_time() - t0,
                            {'v0': round(v0, 3), 'v1': round(float(objective @ r), 3), 'good': round(good, 3), 'n': self.problem.n}))
    return r
S.Search.improve = improve
orig_run = S.Search._run
last = {}
def run(self, h, secs):
    orig_run(self, h, secs)
    i = h.getInfo(); last['nodes'] = i.mip_node_count; last['it'] = i.simplex_iteration_count
    last['st'] = str(h.getModelStatus()).split('.')[-1]
S.Search._run = run
orig_sub = S.Search.solve_sub
def sub(self, objective, base, free, start, **k):
    c = cur.get('c'); t0 = time.process_time()
    r = orig_sub(self, objective, base, free, start, **k)
    if c is not None:
        val = float(objective @ r.x) if r.x is not None else math.inf
        c['events'].append(('sub', lineof(sys._getframe(1)), time.process_time() - t0,
            {'free': int(free.sum()), 'start': start is not None, 'nodes_lim': k.get('nodes'),
             'val': round(val, 3), 'cut': round(k.get('cutoff', math.inf), 3), 'bound': round(r.bound, 3),
             'nodes': last.get('nodes'), 'st': last.get('st'), 'ok': val <= k.get('cutoff', math.inf)}))
    return r
S.Search.solve_sub = sub
jobs = make_jobs(n, seed=seed, synthetic=wl == 'synthetic')
snap = snapshot(jobs, catalog_offers(48, seed=seed), ROFR)
t0 = time.process_time(); p = plan(snap, Policy(workers=1)); tot = time.process_time() - t0
print(wl, seed, 'total cpu', round(tot, 2), 'count cpu', round(sum(c['total'] for c in comps), 2), 'cost', round(p.total_cost, 2), 'tiers', tier_counts(p, jobs), 'gap', p.to_dict()['stats']['lp_bound_gap'])
for c in sorted(comps, key=lambda c: -c['total'])[:2]:
    print('== comp', c['jobs'], 'count cpu', round(c['total'], 2), c['best'])
    agg = defaultdict(lambda: [0, 0.0])
    for kind, where, dt, info in c['events']:
        if kind == 'improve':
            continue
        key = kind + ' ' + where + (' start' if info.get('start') else '') + (' ok' if info.get('ok') else '')
        agg[key][0] += 1; agg[key][1] += dt
    for k, (m, s) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f'  {k:40s} n={m:3d} cpu={s:6.2f}')
    if verbose:
        for kind, where, dt, info in c['events']:
            if dt > 0.05 or kind != 'sub':
                print('   ', kind, where, round(dt, 3), info)
