// How a Sigstore bundle artifact is recognised and how large one may be: apart from
// sigstore-bundle.ts so that finding signatures does not load the @sigstore libraries.
export const BUNDLE_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
export const MAX_BUNDLE_BYTES = 1024 * 1024;
