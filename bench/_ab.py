"""What the side-by-side scripts in bench/ share: contenders timed in interleaved rounds, so that the machine's drift
falls on all of them alike"""
import statistics, time

def interleaved(steps:dict, rounds:int=7, per_round:int=300) -> dict:
    """Median seconds per call of each function in `steps` (name -> function), over `rounds` rounds, each of which calls
    every function `per_round` times in turn"""
    times = {n: [] for n in steps}
    for _ in range(rounds):
        for n, step in steps.items():
            t = time.perf_counter()
            for _ in range(per_round): step()
            times[n].append((time.perf_counter() - t) / per_round)
    return {n: statistics.median(ts) for n, ts in times.items()}
