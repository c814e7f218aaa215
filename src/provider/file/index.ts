// File mode provider: manifests from a local directory, loaded on demand and watched for changes.
export {
  isManifestFileName,
  listManifestFiles,
  loadManifestDirectory,
  loadManifestFile,
  parseManifestText,
  type LoadedManifests,
  type ManifestFiles,
  type ManifestProblem,
} from "./load-manifests.ts";
export { watchManifestDirectory, type ManifestWatcher, type WatchOptions } from "./watch-manifests.ts";
