"""Does cProfile, enabled in one thread, record that thread's outer call when other threads run Python
meanwhile? Python 3.12's cProfile is built on sys.monitoring, whose events are process-wide."""
import cProfile, pstats, sys, threading, time

def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))

def the_trial():
    busy(1.0)

def other_thread(stop):
    while not stop.is_set():
        busy(0.01)

def profiled(others):
    stop = threading.Event()
    threads = [threading.Thread(target=other_thread, args=(stop,)) for _ in range(others)]
    for t in threads: t.start()
    result = {}
    def in_thread():
        profile = cProfile.Profile()
        with profile:
            the_trial()
        stats = pstats.Stats(profile).stats
        result["trial_listed"] = any(name == "the_trial" for (_, _, name) in stats)
        result["other_listed"] = any(name == "other_thread" or name == "busy" and calls > 1
                                     for (_, _, name), (_, calls, *_ ) in stats.items())
        result["functions"] = len(stats)
    t = threading.Thread(target=in_thread); t.start(); t.join()
    stop.set()
    for th in threads: th.join()
    return result

print(sys.version.split()[0], {"no other thread": profiled(0), "two other threads": profiled(2)})
