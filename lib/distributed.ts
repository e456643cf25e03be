// Data-parallel process groups on libtorch's c10d: a TCPStore at MASTER_ADDR:MASTER_PORT for the
// rendezvous (rank 0 hosts it), Gloo (CPU) or NCCL (CUDA, where built) for the collectives.
// torchrun's conventions: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.
import { type Device } from './device.js';
import { DistributedError } from './errors.js';
import { native, type NativeProcessGroup } from './native.js';
import { type Tensor } from './tensor.js';

/**
 * Whether this build of the addon has c10d's NCCL backend (compiled against a CUDA libtorch with
 * NCCL's headers: `JFA_NCCL=1`, as the CI's CUDA build does): only then can a model on a GPU train
 * data-parallel.
 * @returns true when it has.
 * @example
 * ```ts
 * const backend = ncclBuilt() ? 'nccl' : 'gloo';
 * ```
 */
export function ncclBuilt(): boolean {
  return native().ncclBuilt;
}

/** How long a rendezvous, a collective or the start-up check waits for the other ranks by default (ms). */
export const DEFAULT_DISTRIBUTED_TIMEOUT_MS = 60_000;
/** MASTER_PORT's default, as torchrun's. */
export const DEFAULT_MASTER_PORT = 29500;

/** Where this process sits in a data-parallel run. */
export interface DistributedOptions {
  /** this process's rank, 0..worldSize-1 (RANK) */
  rank: number;
  /** processes in the run (WORLD_SIZE) */
  worldSize: number;
  /** the host of rank 0, which hosts the TCPStore (MASTER_ADDR; default 127.0.0.1) */
  masterAddr?: string | undefined;
  /** its port (MASTER_PORT; default 29500) */
  masterPort?: number | undefined;
  /**
   * Rendezvous, every collective and the start-up check give up after this long (default 60000).
   * A rank that dies is noticed at once (its connections close); one that hangs, after this.
   */
  timeoutMs?: number | undefined;
  /** 'auto' (default: NCCL for CUDA training where built, else Gloo), 'gloo' or 'nccl' */
  backend?: 'auto' | 'gloo' | 'nccl' | undefined;
  /** how a micro-batch's gradients travel: one flat buffer (default) or one all-reduce per tensor */
  bucket?: 'flat' | 'tensor' | undefined;
}

/**
 * The data-parallel settings in torchrun's environment variables, or undefined when RANK and
 * WORLD_SIZE are not both set.
 * @param env - the environment (default process.env).
 * @returns rank, world size, master address and port.
 * @throws RangeError naming the variable and its value when one is not a valid number.
 * @example
 * ```ts
 * const d = distributedFromEnv(); // { rank: 1, worldSize: 2, masterAddr: '10.0.0.1', masterPort: 29500 }
 * ```
 */
export function distributedFromEnv(env: NodeJS.ProcessEnv = process.env): DistributedOptions | undefined {
  if (env.RANK === undefined && env.WORLD_SIZE === undefined) return undefined;
  const int = (name: string, min: number, fallback?: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') {
      if (fallback === undefined) throw new RangeError(`distributed: ${name} is not set (RANK and WORLD_SIZE go together)`);
      return fallback;
    }
    const n = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < min) throw new RangeError(`distributed: ${name} must be an integer >= ${min}, got '${raw}'`);
    return n;
  };
  return {
    rank: int('RANK', 0),
    worldSize: int('WORLD_SIZE', 1),
    masterAddr: env.MASTER_ADDR || '127.0.0.1',
    masterPort: int('MASTER_PORT', 1, DEFAULT_MASTER_PORT),
  };
}

/**
 * Checks data-parallel options: RangeErrors/TypeErrors naming the field and its value.
 * @param o - the options to check.
 * @returns the options with their defaults filled in.
 * @throws TypeError or RangeError for a missing or bad field.
 * @example
 * ```ts
 * checkDistributed({ rank: 0, worldSize: 2 }); // + masterAddr 127.0.0.1, masterPort 29500, timeoutMs 60000
 * ```
 */
export function checkDistributed(o: DistributedOptions): Required<DistributedOptions> {
  if (typeof o !== 'object' || o === null) throw new TypeError(`distributed: options must be an object, got ${String(o)}`);
  const int = (name: keyof DistributedOptions, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new RangeError(`distributed: ${name} must be an integer in ${min}..${max}, got ${JSON.stringify(v) ?? String(v)}`);
  };
  int('worldSize', o.worldSize, 1);
  int('rank', o.rank, 0);
  if (o.rank >= o.worldSize) throw new RangeError(`distributed: RANK ${o.rank} is out of range for WORLD_SIZE ${o.worldSize} (ranks are 0..${o.worldSize - 1})`);
  const out = {
    rank: o.rank,
    worldSize: o.worldSize,
    masterAddr: o.masterAddr ?? '127.0.0.1',
    masterPort: o.masterPort ?? DEFAULT_MASTER_PORT,
    timeoutMs: o.timeoutMs ?? DEFAULT_DISTRIBUTED_TIMEOUT_MS,
    backend: o.backend ?? 'auto',
    bucket: o.bucket ?? 'flat',
  };
  if (typeof out.masterAddr !== 'string' || !out.masterAddr) throw new TypeError(`distributed: masterAddr must be a host name or address, got ${JSON.stringify(out.masterAddr)}`);
  int('masterPort', out.masterPort, 1, 65535);
  int('timeoutMs', out.timeoutMs, 1);
  if (!['auto', 'gloo', 'nccl'].includes(out.backend)) throw new RangeError(`distributed: backend must be auto, gloo or nccl, got ${JSON.stringify(out.backend)}`);
  if (!['flat', 'tensor'].includes(out.bucket)) throw new RangeError(`distributed: bucket must be flat or tensor, got ${JSON.stringify(out.bucket)}`);
  return out;
}

/**
 * A joined c10d process group. Every rank must make the same calls in the same order.
 * Failures reject with an Error naming this rank, the address and, when the heartbeats tell, the
 * rank that died or hung.
 */
export class ProcessGroup implements Disposable {
  /** @internal */
  readonly handle: NativeProcessGroup;
  /** the options it was joined with, defaults filled in */
  readonly options: Required<DistributedOptions>;

  private constructor(handle: NativeProcessGroup, options: Required<DistributedOptions>) {
    this.handle = handle;
    this.options = options;
  }

  /**
   * Joins the group: waits (up to timeoutMs) until every rank has come and agrees on the world size.
   * @param o - rank, world size, master address and port, timeout.
   * @param device - where the tensors of this rank's collectives live: 'cpu' (default, Gloo), or this
   * rank's GPU ('cuda', 'cuda:N'), which makes backend 'auto' pick NCCL where the addon has it
   * ({@link ncclBuilt}); an NCCL group stages CPU tensors through that GPU.
   * @returns the joined group.
   * @throws (rejects with) RangeError for bad options (backend nccl on a build without it, or with the device 'cpu'); Error for a port in use, a WORLD_SIZE the ranks disagree on, a rank that never came, or an NCCL that cannot set up its communicator.
   * @example
   * ```ts
   * using group = await ProcessGroup.connect({ rank: 0, worldSize: 2, masterPort: 29511 });
   * ```
   */
  static async connect(o: DistributedOptions, device: Device = 'cpu'): Promise<ProcessGroup> {
    const options = checkDistributed(o);
    const handle = new (native().ProcessGroup)({ ...options, device });
    await handle.connectAsync().catch(rethrowDistributed);
    return new ProcessGroup(handle, options);
  }

  /** this process's rank */
  get rank(): number {
    return this.handle.rank;
  }

  /** ranks in the group */
  get worldSize(): number {
    return this.handle.worldSize;
  }

  /** 'gloo' or 'nccl' */
  get backend(): string {
    return this.handle.backend ?? 'none';
  }

  /**
   * Sums the tensors over the ranks, in place (then times `scale`).
   * @param tensors - same shapes and dtypes on every rank.
   * @param options - bucket (flat buffer or per tensor) and scale.
   * @returns a promise that settles when the sums are in.
   * @example
   * ```ts
   * const grad = zeros([1024]); // this rank's gradient
   * await group.allReduce([grad], { scale: 1 / group.worldSize }); // now the mean over the ranks
   * ```
   */
  allReduce(tensors: Tensor[], options: { bucket?: 'flat' | 'tensor'; scale?: number } = {}): Promise<void> {
    return this.handle.allReduceAsync(tensors.map((t) => t.handle), options).catch(rethrowDistributed);
  }

  /**
   * Rank `root`'s values into every rank's tensors, in place.
   * @param tensors - same shapes and dtypes on every rank.
   * @param root - the rank whose values win (default 0).
   * @returns a promise that settles when the values are in.
   * @example
   * ```ts
   * const weights = randn([64, 64]);
   * await group.broadcast([weights], 0); // rank 0's values everywhere
   * ```
   */
  broadcast(tensors: Tensor[], root = 0): Promise<void> {
    return this.handle.broadcastAsync(tensors.map((t) => t.handle), root).catch(rethrowDistributed);
  }

  /**
   * Waits until every rank got here.
   * @returns a promise that settles when they all did.
   * @example
   * ```ts
   * await group.barrier();
   * ```
   */
  barrier(): Promise<void> {
    return this.handle.barrierAsync().catch(rethrowDistributed);
  }

  /**
   * Every rank's string under `key`, by rank, through the store (for start-up checks).
   * @param key - the same on every rank.
   * @param value - this rank's value.
   * @returns the values of ranks 0..worldSize-1.
   * @example
   * ```ts
   * const hashes = await group.exchange('data', String(hashString(JSON.stringify(records))));
   * if (new Set(hashes).size > 1) throw new Error('the ranks read different data');
   * ```
   */
  exchange(key: string, value: string): Promise<string[]> {
    return this.handle.exchangeAsync(key, value).catch(rethrowDistributed);
  }

  /**
   * Leaves the group (its heartbeat stops; collectives already started finish first).
   * @example
   * ```ts
   * group.dispose();
   * ```
   */
  dispose(): void {
    this.handle.dispose();
  }

  /**
   * {@link ProcessGroup.dispose}, for `using` declarations.
   * @example
   * ```ts
   * { using group = await ProcessGroup.connect({ rank: 0, worldSize: 2 }); } // left at the end of the block
   * ```
   */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/**
 * A native collective's or rendezvous' failure as a {@link DistributedError} (its message, which
 * names the rank, the address and what failed; the original as the cause). Bad arguments stay the
 * RangeErrors and TypeErrors they are; errors of other kinds pass through unless they come from
 * the group (their message starts with 'distributed').
 * @param e - the error caught.
 * @param always - wrap any Error (a group operation's), not only those that name the group.
 * @returns the error to throw.
 * @example
 * ```ts
 * await group.barrier().catch((e: unknown) => { throw asDistributedError(e); });
 * ```
 */
export function asDistributedError(e: unknown, always = false): unknown {
  if (!(e instanceof Error) || e instanceof RangeError || e instanceof TypeError || e instanceof DistributedError) return e;
  return always || /^distributed\b/.test(e.message) ? new DistributedError(e.message, { cause: e }) : e;
}

const rethrowDistributed = (e: unknown): never => {
  throw asDistributedError(e, true);
};
