// The driver's own access to the API server, as the cluster admin (client certificate): server-side apply of
// many objects at once (bounded concurrency, retries on throttling and conflicts) and paged lists of the
// ApiRoutes' status. Straight to the API server over undici, not through kubectl: one process, keep-alive
// connections, no fork per object.
import { Agent, request } from "undici";
import { type KubeObject } from "./objects.ts";

const FIELD_MANAGER = "phantomgate-bench";

const plurals: Readonly<Record<string, string>> = {
  ApiRoute: "apiroutes",
  AuthServer: "authservers",
  ScopePolicy: "scopepolicies",
};

export interface ApplyTiming {
  readonly objects: number;
  /** Date.now() when the first request was sent and when the last answer arrived. */
  readonly firstWriteMs: number;
  readonly lastWriteMs: number;
  /** Requests repeated after a 409/429/5xx or a network error. */
  readonly retries: number;
}

export interface RouteStatus {
  readonly name: string;
  readonly generation: number;
  readonly programmed: boolean;
  readonly accepted: boolean;
}

export interface KubeAdmin {
  /** Server-side applies every object, `concurrency` requests in flight; throws on a refusal. */
  applyAll(objects: readonly KubeObject[], concurrency: number): Promise<ApplyTiming>;
  /** Every ApiRoute of `namespace` with whether Accepted and Programmed are True for its current generation. */
  listRouteStatus(namespace: string): Promise<RouteStatus[]>;
  close(): Promise<void>;
}

interface Condition {
  readonly type?: string;
  readonly status?: string;
  readonly observedGeneration?: number;
}

interface ListedRoute {
  readonly metadata?: { readonly name?: string; readonly generation?: number };
  readonly status?: { readonly conditions?: readonly Condition[] };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export function createKubeAdmin(credentials: {
  readonly server: string;
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
}): KubeAdmin {
  const dispatcher = new Agent({
    connect: { ca: credentials.caPem, cert: credentials.certPem, key: credentials.keyPem },
    connections: 64,
    keepAliveTimeout: 30_000,
  });
  const base = credentials.server.replace(/\/+$/, "");

  async function applyOne(object: KubeObject): Promise<number> {
    const plural = plurals[object.kind];
    if (plural === undefined) throw new Error(`no plural known for ${object.kind}`);
    const path =
      `/apis/${object.apiVersion}/namespaces/${object.metadata.namespace}/${plural}/${object.metadata.name}` +
      `?fieldManager=${FIELD_MANAGER}&force=true`;
    const body = JSON.stringify(object);
    for (let attempt = 0; ; attempt += 1) {
      let status: number;
      let text: string;
      try {
        const response = await request(`${base}${path}`, {
          method: "PATCH",
          dispatcher,
          headers: { "content-type": "application/apply-patch+yaml", accept: "application/json" },
          body,
          headersTimeout: 30_000,
          bodyTimeout: 30_000,
        });
        status = response.statusCode;
        if (status === 200 || status === 201) {
          await response.body.dump();
          return attempt;
        }
        text = (await response.body.text()).slice(0, 500);
      } catch (error) {
        status = 0;
        text = error instanceof Error ? error.message : String(error);
      }
      const retryable = status === 0 || status === 409 || status === 429 || status >= 500;
      if (!retryable || attempt >= 8) {
        throw new Error(`apply ${object.kind} ${object.metadata.name}: HTTP ${status}: ${text}`);
      }
      await sleep(Math.min(2_000, 50 * 2 ** attempt));
    }
  }

  return {
    async applyAll(objects, concurrency) {
      const firstWriteMs = Date.now();
      let next = 0;
      let retries = 0;
      let lastWriteMs = firstWriteMs;
      const worker = async (): Promise<void> => {
        while (next < objects.length) {
          const object = objects[next];
          next += 1;
          if (object === undefined) continue;
          retries += await applyOne(object);
          lastWriteMs = Math.max(lastWriteMs, Date.now());
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, objects.length)) }, worker));
      return { objects: objects.length, firstWriteMs, lastWriteMs, retries };
    },

    async listRouteStatus(namespace) {
      const routes: RouteStatus[] = [];
      let token: string | undefined;
      do {
        const query = new URLSearchParams({ limit: "500" });
        if (token !== undefined) query.set("continue", token);
        const response = await request(
          `${base}/apis/phantomgate.dev/v1alpha1/namespaces/${namespace}/apiroutes?${query.toString()}`,
          {
            dispatcher,
            headers: { accept: "application/json" },
            headersTimeout: 60_000,
            bodyTimeout: 60_000,
          },
        );
        if (response.statusCode !== 200) {
          throw new Error(`list apiroutes: HTTP ${response.statusCode}: ${await response.body.text()}`);
        }
        const page = (await response.body.json()) as {
          items?: readonly ListedRoute[];
          metadata?: { continue?: string };
        };
        for (const item of page.items ?? []) {
          const generation = item.metadata?.generation ?? 0;
          const current = (type: string): boolean =>
            (item.status?.conditions ?? []).some(
              (c) => c.type === type && c.status === "True" && c.observedGeneration === generation,
            );
          routes.push({
            name: item.metadata?.name ?? "",
            generation,
            accepted: current("Accepted"),
            programmed: current("Programmed"),
          });
        }
        token = page.metadata?.continue === "" ? undefined : page.metadata?.continue;
      } while (token !== undefined);
      return routes;
    },

    close: () => dispatcher.close(),
  };
}
