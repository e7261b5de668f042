// A recording stand-in for KubeApi in unit tests of the operator: every call is kept as
// "VERB path" with its body, objects created or replaced are kept by path and answered to later GETs,
// and `failWith` makes chosen calls fail as the API server would (e.g. a 409 conflict).
import { ApiError, type KubeApi, type KubeList } from '../../operator/kube/client.js';
import { OperatorApi } from '../../operator/kube/operator-api.js';

export interface Call {
  verb: 'get' | 'list' | 'create' | 'update' | 'patch' | 'delete';
  path: string;
  body?: any;
}

export class RecordingKube {
  readonly calls: Call[] = [];
  readonly objects = new Map<string, any>();
  /** Returns an ApiError to fail a call with, or undefined to let it through. */
  failWith: (call: Call) => ApiError | undefined = () => undefined;

  private record(call: Call): void {
    this.calls.push(call);
    const e = this.failWith(call);
    if (e) throw e;
  }

  /** The calls as "verb path" lines, reads left out unless asked for. */
  lines(withReads = false): string[] {
    return this.calls.filter((c) => withReads || (c.verb !== 'get' && c.verb !== 'list')).map((c) => `${c.verb} ${c.path}`);
  }

  bodies(verb: Call['verb'], pathSuffix: string): any[] {
    return this.calls.filter((c) => c.verb === verb && c.path.endsWith(pathSuffix)).map((c) => c.body);
  }

  readonly api = {
    get: async (path: string) => {
      this.record({ verb: 'get', path });
      const o = this.objects.get(path);
      if (!o) throw new ApiError(404, 'NotFound', `GET ${path}: 404 not found`);
      return structuredClone(o);
    },
    list: async (path: string): Promise<KubeList<unknown>> => {
      this.record({ verb: 'list', path });
      return { metadata: { resourceVersion: '1' }, items: [...this.objects].filter(([p]) => p.startsWith(`${path}/`)).map(([, o]) => structuredClone(o)) };
    },
    create: async (path: string, body: any) => {
      this.record({ verb: 'create', path, body });
      const at = `${path}/${body.metadata?.name}`;
      if (this.objects.has(at)) throw new ApiError(409, 'AlreadyExists', `POST ${path}: 409 ${body.metadata?.name} already exists`);
      this.objects.set(at, structuredClone(body));
      return structuredClone(body);
    },
    replace: async (path: string, body: any) => {
      this.record({ verb: 'update', path, body });
      this.objects.set(path, structuredClone(body));
      return structuredClone(body);
    },
    mergePatch: async (path: string, body: any) => {
      this.record({ verb: 'patch', path, body });
      return structuredClone(this.objects.get(path) ?? body);
    },
    delete: async (path: string) => {
      this.record({ verb: 'delete', path });
      this.objects.delete(path);
      return {};
    },
    watch: () => new Promise<void>(() => undefined),
  };

  /** The operator's facade over this recorder. */
  operatorApi(): OperatorApi {
    return new OperatorApi(this.api as unknown as KubeApi);
  }
}
