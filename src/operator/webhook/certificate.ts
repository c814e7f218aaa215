// Serving certificates of the webhook: issuing a fresh CA + serving certificate with the openssl CLI (node:crypto
// reads X.509 but cannot create it), and checking a certificate against what the webhook needs.
import { execFile } from "node:child_process";
import { createPrivateKey, randomBytes, X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { isIP } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/** A serving certificate, its key and the CA bundle that verifies it, all PEM. */
export interface WebhookCertificate {
  readonly cert: string;
  readonly key: string;
  /** The CAs the API server must trust (`caBundle`, base64-encoded there); may hold a previous CA too. */
  readonly caBundle: string;
}

export interface IssueCertificateOptions {
  /** DNS names in subjectAltName, e.g. `phantomgate-webhook.phantomgate-system.svc`. */
  readonly dnsNames: readonly string[];
  /** IP addresses in subjectAltName (tests call the webhook at 127.0.0.1). */
  readonly ipAddresses?: readonly string[];
  /** Whole days; the CA and the serving certificate share it. */
  readonly validityDays: number;
  /** The openssl binary. Default `openssl` on PATH. */
  readonly openssl?: string;
}

/** A new serving certificate signed by a new CA, and that CA's certificate (PEM). Its CA key is discarded. */
export async function issueServingCertificate(
  options: IssueCertificateOptions,
): Promise<{ cert: string; key: string; ca: string }> {
  const { dnsNames, validityDays } = options;
  const ipAddresses = options.ipAddresses ?? [];
  const badName = dnsNames.find((name) => !dnsNamePattern.test(name));
  if (badName !== undefined) throw new Error(`not a DNS name for a certificate: ${JSON.stringify(badName)}`);
  const badIp = ipAddresses.find((ip) => isIP(ip) === 0);
  if (badIp !== undefined) throw new Error(`not an IP address: ${JSON.stringify(badIp)}`);
  if (dnsNames.length + ipAddresses.length === 0)
    throw new Error("a serving certificate needs a DNS name or IP");
  if (!Number.isSafeInteger(validityDays) || validityDays < 1) {
    throw new Error(`validityDays must be a whole number of days >= 1, got ${validityDays}`);
  }

  const openssl = (args: readonly string[]) => runOpenssl(options.openssl ?? "openssl", args);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc"];
  const days = String(validityDays);
  // A private directory: the CA key lives here for the few milliseconds it takes to sign, then is removed.
  const dir = await mkdtemp(join(tmpdir(), "phantomgate-webhook-cert-"));
  const file = (name: string): string => join(dir, name);
  try {
    // A unique CA name per issue, so the current and the previous CA in one bundle are told apart.
    const caName = `phantomgate-webhook-ca-${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
    await openssl([
      "req",
      "-x509",
      ...ec,
      "-keyout",
      file("ca.key"),
      "-out",
      file("ca.crt"),
      "-days",
      days,
      "-subj",
      `/CN=${caName}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    await openssl([
      "req",
      ...ec,
      "-keyout",
      file("tls.key"),
      "-out",
      file("tls.csr"),
      "-subj",
      "/CN=phantomgate-webhook",
    ]);
    const altNames = [...dnsNames.map((name) => `DNS:${name}`), ...ipAddresses.map((ip) => `IP:${ip}`)];
    await writeFile(
      file("tls.ext"),
      [
        `subjectAltName=${altNames.join(",")}`,
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        "extendedKeyUsage=serverAuth",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid",
        "",
      ].join("\n"),
    );
    const serial = randomBytes(16);
    serial[0] = (serial[0] ?? 0) & 0x7f; // positive, as RFC 5280 requires
    await openssl([
      "x509",
      "-req",
      "-in",
      file("tls.csr"),
      "-CA",
      file("ca.crt"),
      "-CAkey",
      file("ca.key"),
      "-set_serial",
      `0x${serial.toString("hex")}`,
      "-days",
      days,
      "-extfile",
      file("tls.ext"),
      "-out",
      file("tls.crt"),
    ]);
    return {
      cert: await readFile(file("tls.crt"), "utf8"),
      key: await readFile(file("tls.key"), "utf8"),
      ca: await readFile(file("ca.crt"), "utf8"),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** What is wrong with `certificate` for serving the given names until `renewAt`, or undefined when nothing. */
export function findCertificateProblem(
  certificate: WebhookCertificate,
  needs: { dnsNames: readonly string[]; ipAddresses: readonly string[]; validUntil: Date },
): string | undefined {
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(certificate.cert);
  } catch {
    return "tls.crt is not a PEM certificate";
  }
  try {
    if (!leaf.checkPrivateKey(createPrivateKey(certificate.key))) return "tls.key does not match tls.crt";
  } catch {
    return "tls.key is not a PEM private key";
  }
  if (leaf.validToDate.getTime() <= needs.validUntil.getTime()) {
    return `the certificate expires at ${leaf.validToDate.toISOString()}, within the renewal window`;
  }
  const { dnsNames, ipAddresses } = readAltNames(leaf);
  const missing = [
    ...needs.dnsNames.filter((name) => !dnsNames.includes(name.toLowerCase())),
    ...needs.ipAddresses.filter((ip) => !ipAddresses.includes(normalizeIp(ip))),
  ];
  if (missing.length > 0) return `the certificate does not cover ${missing.join(", ")}`;
  const verifiedBy = findIssuer(leaf, certificate.caBundle);
  if (verifiedBy === undefined) return "no CA in ca.crt verifies tls.crt";
  return undefined;
}

/** The CA certificate of `bundle` that signed `leaf`, if any. */
export function findIssuer(leaf: X509Certificate, bundle: string): X509Certificate | undefined {
  return splitPemCertificates(bundle)
    .flatMap((pem) => {
      try {
        return [new X509Certificate(pem)];
      } catch {
        return [];
      }
    })
    .find((ca) => ca.ca && leaf.checkIssued(ca) && leaf.verify(ca.publicKey));
}

/** When a PEM certificate stops being valid. */
export function certificateNotAfter(pem: string): Date {
  return new X509Certificate(pem).validToDate;
}

/** The certificates of a PEM bundle, each as its own PEM block. */
export function splitPemCertificates(bundle: string): string[] {
  return [...bundle.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map(
    (match) => `${match[0]}\n`,
  );
}

// RFC 1123 names, lower case as Kubernetes Service names are; a wildcard first label is allowed.
const dnsNamePattern = /^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function readAltNames(certificate: X509Certificate): { dnsNames: string[]; ipAddresses: string[] } {
  const entries = (certificate.subjectAltName ?? "").split(/,\s*/);
  return {
    dnsNames: entries.filter((e) => e.startsWith("DNS:")).map((e) => e.slice(4).toLowerCase()),
    ipAddresses: entries
      .filter((e) => e.startsWith("IP Address:"))
      .map((e) => normalizeIp(e.slice("IP Address:".length))),
  };
}

// Node prints IPv6 addresses uncompressed; the URL parser gives one canonical form for both sides.
function normalizeIp(ip: string): string {
  return isIP(ip) === 6 ? new URL(`http://[${ip}]/`).hostname : ip;
}

async function runOpenssl(binary: string, args: readonly string[]): Promise<void> {
  try {
    await execFileAsync(binary, args);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      throw new Error(`${binary} not found: the webhook issues its certificates with the openssl CLI`, {
        cause: error,
      });
    }
    const stderr = (error as { stderr?: unknown }).stderr;
    throw new Error(
      `openssl ${args[0] ?? ""} failed: ${typeof stderr === "string" ? stderr.trim() : String(error)}`,
      {
        cause: error,
      },
    );
  }
}
