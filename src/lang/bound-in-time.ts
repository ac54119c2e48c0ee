/**
 * `work`'s outcome, or what `late` returns (or throws) once `ms` have passed without it
 * settling. `work` goes on regardless; only its waiter stops waiting. For waits on a
 * dependency that may stop answering without closing its connection (a database probe,
 * a key's re-check, a shutdown's last writes).
 */
export function boundInTime<T>(work: Promise<T>, ms: number, late: () => T): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      try {
        resolve(late());
      } catch (error) {
        reject(error);
      }
    }, ms);
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
