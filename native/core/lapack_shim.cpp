// The six BLAS/LAPACK routines that FAISS references but libtorch_cpu (MKL inside) does not
// export, written on top of the ones it does export (sgemm_, ?gesdd_, dsyevd_, ?getrs_).
// With them the addon takes all of its BLAS and LAPACK from libtorch and needs no system
// libblas/liblapack (see CMakeLists.txt, JFA_BLAS_FROM_TORCH). FAISS calls them only when it
// trains a PCA/OPQ/ITQ transform or a local-search quantizer, which jfa-torch never does, but
// they compute the real thing: the C++ tests check them against their definitions.
//
// Fortran calling convention as FAISS declares it: every argument by pointer, 32-bit integers
// (LP64), no hidden string lengths. Workspace arguments (work/lwork) are accepted and ignored:
// each routine allocates what the routine it calls needs, and a query (lwork == -1) answers 1.
#include <algorithm>
#include <cstdint>
#include <vector>

using fint = int;

extern "C" {
// Exported by libtorch_cpu (MKL).
int sgemm_(const char* transa, const char* transb, fint* m, fint* n, fint* k, const float* alpha, const float* a,
           fint* lda, const float* b, fint* ldb, float* beta, float* c, fint* ldc);
int sgesdd_(const char* jobz, fint* m, fint* n, float* a, fint* lda, float* s, float* u, fint* ldu, float* vt,
            fint* ldvt, float* work, fint* lwork, fint* iwork, fint* info);
int dgesdd_(const char* jobz, fint* m, fint* n, double* a, fint* lda, double* s, double* u, fint* ldu, double* vt,
            fint* ldvt, double* work, fint* lwork, fint* iwork, fint* info);
int dsyevd_(const char* jobz, const char* uplo, fint* n, double* a, fint* lda, double* w, double* work, fint* lwork,
            fint* iwork, fint* liwork, fint* info);
int sgetrs_(const char* trans, fint* n, fint* nrhs, const float* a, fint* lda, const fint* ipiv, float* b, fint* ldb,
            fint* info);
int dgetrs_(const char* trans, fint* n, fint* nrhs, const double* a, fint* lda, const fint* ipiv, double* b,
            fint* ldb, fint* info);

// Provided here.
int sgesvd_(const char* jobu, const char* jobvt, fint* m, fint* n, float* a, fint* lda, float* s, float* u, fint* ldu,
            float* vt, fint* ldvt, float* work, fint* lwork, fint* info);
int dgesvd_(const char* jobu, const char* jobvt, fint* m, fint* n, double* a, fint* lda, double* s, double* u,
            fint* ldu, double* vt, fint* ldvt, double* work, fint* lwork, fint* info);
int dsyev_(const char* jobz, const char* uplo, fint* n, double* a, fint* lda, double* w, double* work, fint* lwork,
           fint* info);
int ssyrk_(const char* uplo, const char* trans, fint* n, fint* k, float* alpha, float* a, fint* lda, float* beta,
           float* c, fint* ldc);
int sgetri_(fint* n, float* a, fint* lda, fint* ipiv, float* work, fint* lwork, fint* info);
int dgetri_(fint* n, double* a, fint* lda, fint* ipiv, double* work, fint* lwork, fint* info);
}

namespace {

char upper(const char* c) { return static_cast<char>(*c >= 'a' && *c <= 'z' ? *c - 'a' + 'A' : *c); }

bool is_one_of(char c, const char* set) {
  for (; *set; ++set)
    if (c == *set) return true;
  return false;
}

template <typename T>
int gesdd(const char* jobz, fint* m, fint* n, T* a, fint* lda, T* s, T* u, fint* ldu, T* vt, fint* ldvt, T* work,
          fint* lwork, fint* iwork, fint* info) {
  if constexpr (sizeof(T) == sizeof(float))
    return sgesdd_(jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork, info);
  else
    return dgesdd_(jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork, info);
}

// Copies a rows x cols column-major block.
template <typename T>
void copy_block(fint rows, fint cols, const T* from, fint ld_from, T* to, fint ld_to) {
  for (fint j = 0; j < cols; ++j)
    std::copy(from + static_cast<int64_t>(j) * ld_from, from + static_cast<int64_t>(j) * ld_from + rows,
              to + static_cast<int64_t>(j) * ld_to);
}

// gesvd through gesdd (divide and conquer: same factorisation, singular vectors possibly of other sign).
template <typename T>
void gesvd(const char* jobu_p, const char* jobvt_p, fint* m_p, fint* n_p, T* a, fint* lda_p, T* s, T* u, fint* ldu_p,
           T* vt, fint* ldvt_p, T* work, fint* lwork, fint* info) {
  const char jobu = upper(jobu_p), jobvt = upper(jobvt_p);
  const fint m = *m_p, n = *n_p, lda = *lda_p, mn = std::min(m, n);
  *info = 0;
  if (!is_one_of(jobu, "ASON")) *info = -1;
  else if (!is_one_of(jobvt, "ASON") || (jobu == 'O' && jobvt == 'O')) *info = -2;
  else if (m < 0) *info = -3;
  else if (n < 0) *info = -4;
  else if (lda < std::max<fint>(1, m)) *info = -6;
  else if ((jobu == 'A' || jobu == 'S') && *ldu_p < std::max<fint>(1, m)) *info = -9;
  else if (jobvt == 'A' && *ldvt_p < std::max<fint>(1, n)) *info = -11;
  else if (jobvt == 'S' && *ldvt_p < std::max<fint>(1, mn)) *info = -11;
  if (*info != 0) return;
  if (*lwork == -1) {
    work[0] = 1;
    return;
  }
  if (mn == 0) return;

  const bool want_u = jobu != 'N', want_vt = jobvt != 'N';
  const bool full = jobu == 'A' || jobvt == 'A';
  char jobz = !want_u && !want_vt ? 'N' : full ? 'A' : 'S';
  fint ucols = full ? m : mn, vtrows = full ? n : mn;
  fint ldu_t = std::max<fint>(1, m), ldvt_t = std::max<fint>(1, vtrows);
  std::vector<T> acopy(static_cast<size_t>(m) * n), ut(jobz == 'N' ? 1 : static_cast<size_t>(m) * ucols),
      vtt(jobz == 'N' ? 1 : static_cast<size_t>(vtrows) * n);
  copy_block(m, n, a, lda, acopy.data(), m);
  std::vector<fint> iwork(8 * static_cast<size_t>(mn));
  fint query = -1, m_ = m, n_ = n, lda_t = std::max<fint>(1, m);
  T size = 0;
  gesdd<T>(&jobz, &m_, &n_, acopy.data(), &lda_t, s, ut.data(), &ldu_t, vtt.data(), &ldvt_t, &size, &query,
           iwork.data(), info);
  if (*info != 0) return;
  fint len = std::max<fint>(1, static_cast<fint>(size));
  std::vector<T> w(static_cast<size_t>(len));
  gesdd<T>(&jobz, &m_, &n_, acopy.data(), &lda_t, s, ut.data(), &ldu_t, vtt.data(), &ldvt_t, w.data(), &len,
           iwork.data(), info);
  if (*info != 0) return;
  if (jobu == 'A') copy_block(m, m, ut.data(), ldu_t, u, *ldu_p);
  if (jobu == 'S') copy_block(m, mn, ut.data(), ldu_t, u, *ldu_p);
  if (jobu == 'O') copy_block(m, mn, ut.data(), ldu_t, a, lda);
  if (jobvt == 'A') copy_block(n, n, vtt.data(), ldvt_t, vt, *ldvt_p);
  if (jobvt == 'S') copy_block(mn, n, vtt.data(), ldvt_t, vt, *ldvt_p);
  if (jobvt == 'O') copy_block(mn, n, vtt.data(), ldvt_t, a, lda);
}

template <typename T>
void getri(fint* n_p, T* a, fint* lda_p, fint* ipiv, T* work, fint* lwork, fint* info) {
  const fint n = *n_p, lda = *lda_p;
  *info = n < 0 ? -1 : lda < std::max<fint>(1, n) ? -3 : 0;
  if (*info != 0) return;
  if (*lwork == -1) {
    work[0] = 1;
    return;
  }
  for (fint i = 0; i < n; ++i)
    if (a[i + static_cast<int64_t>(i) * lda] == T(0)) {
      *info = i + 1;  // singular: U(i,i) is exactly zero, as getri reports it
      return;
    }
  if (n == 0) return;
  // inverse(A) solves A X = I with the LU factors getrf left in a.
  std::vector<T> x(static_cast<size_t>(n) * n, T(0));
  for (fint i = 0; i < n; ++i) x[i + static_cast<size_t>(i) * n] = T(1);
  fint nn = n, nrhs = n, ldx = n;
  const char trans = 'N';
  if constexpr (sizeof(T) == sizeof(float))
    sgetrs_(&trans, &nn, &nrhs, a, lda_p, ipiv, x.data(), &ldx, info);
  else
    dgetrs_(&trans, &nn, &nrhs, a, lda_p, ipiv, x.data(), &ldx, info);
  if (*info == 0) copy_block(n, n, x.data(), n, a, lda);
}

}  // namespace

extern "C" {

int sgesvd_(const char* jobu, const char* jobvt, fint* m, fint* n, float* a, fint* lda, float* s, float* u, fint* ldu,
            float* vt, fint* ldvt, float* work, fint* lwork, fint* info) {
  gesvd<float>(jobu, jobvt, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, info);
  return 0;
}

int dgesvd_(const char* jobu, const char* jobvt, fint* m, fint* n, double* a, fint* lda, double* s, double* u,
            fint* ldu, double* vt, fint* ldvt, double* work, fint* lwork, fint* info) {
  gesvd<double>(jobu, jobvt, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, info);
  return 0;
}

int dsyev_(const char* jobz, const char* uplo, fint* n, double* a, fint* lda, double* w, double* work, fint* lwork,
           fint* info) {
  *info = !is_one_of(upper(jobz), "VN") ? -1 : !is_one_of(upper(uplo), "UL") ? -2 : *n < 0 ? -3
        : *lda < std::max<fint>(1, *n) ? -5 : 0;
  if (*info != 0) return 0;
  if (*lwork == -1) {
    work[0] = 1;
    return 0;
  }
  if (*n == 0) return 0;
  fint query = -1, iquery = -1, isize = 0;
  double size = 0;
  dsyevd_(jobz, uplo, n, a, lda, w, &size, &query, &isize, &iquery, info);
  if (*info != 0) return 0;
  fint len = std::max<fint>(1, static_cast<fint>(size)), ilen = std::max<fint>(1, isize);
  std::vector<double> wk(static_cast<size_t>(len));
  std::vector<fint> iwk(static_cast<size_t>(ilen));
  dsyevd_(jobz, uplo, n, a, lda, w, wk.data(), &len, iwk.data(), &ilen, info);
  return 0;
}

// C := alpha A A^T + beta C (trans 'N', A n x k) or alpha A^T A + beta C (trans 'T'/'C', A k x n),
// touching only the `uplo` triangle of C, as BLAS does.
int ssyrk_(const char* uplo, const char* trans, fint* n_p, fint* k_p, float* alpha, float* a, fint* lda, float* beta,
           float* c, fint* ldc) {
  const fint n = *n_p, k = *k_p;
  if (n <= 0) return 0;
  const bool notrans = upper(trans) == 'N', up = upper(uplo) == 'U';
  std::vector<float> prod(static_cast<size_t>(n) * n, 0.0f);
  if (k > 0 && *alpha != 0.0f) {
    fint nn = n, kk = k, ldp = n;
    float zero = 0.0f;
    sgemm_(notrans ? "N" : "T", notrans ? "T" : "N", &nn, &nn, &kk, alpha, a, lda, a, lda, &zero, prod.data(), &ldp);
  }
  for (fint j = 0; j < n; ++j) {
    const fint from = up ? 0 : j, to = up ? j + 1 : n;
    float* col = c + static_cast<int64_t>(j) * *ldc;
    for (fint i = from; i < to; ++i)
      col[i] = prod[i + static_cast<size_t>(j) * n] + (*beta == 0.0f ? 0.0f : *beta * col[i]);
  }
  return 0;
}

int sgetri_(fint* n, float* a, fint* lda, fint* ipiv, float* work, fint* lwork, fint* info) {
  getri<float>(n, a, lda, ipiv, work, lwork, info);
  return 0;
}

int dgetri_(fint* n, double* a, fint* lda, fint* ipiv, double* work, fint* lwork, fint* info) {
  getri<double>(n, a, lda, ipiv, work, lwork, info);
  return 0;
}

}  // extern "C"
