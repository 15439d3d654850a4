/* Triton backend "simulated": a GPU that costs time and no compute, native as a TensorRT backend is.

`imagegen export --simulate COSTS.json` (export/simulate.py) writes a family's real tensor contracts
with this backend, compiles this file into each model's folder (libtriton_simulated.so, where Triton
looks first for a model's backend) and writes, in each version folder, `simulation.txt`: the
component's role, the input its outputs follow, its outputs, and what one call of 1, 2, ...
max_batch_size samples takes on the GPU the cost file measured. Handed a batch of B samples (every
request Triton's batcher queued together), it takes the GPU and answers B's time after it took it,
sleeping whatever its own work left (a sleep frees the CPU, as a GPU computing does), with outputs of
the contract's shapes that cost little and keep a pipeline's numbers sane: a denoiser's prediction is
a scaled copy of its latents, the VAE decoder's pixels are its latents' first channels, blown up.

Native, not a Python backend model: a Python model's every call crosses to its stub process and back
through shared memory (2-3 ms a call on two cores, a tenth of an SDXL step's budget), an overhead of
the simulation that a TensorRT plan in Triton does not pay, so `make bench-gpu-sim` would charge it
to the server.

The GPU is one: a lock on the repository's folder (flock) lets one model compute at a time, as one
GPU runs one model's kernels at a time, so a VAE decode delays the steps queued behind it as it
would on the card.

The nvidia-pytriton wheel ships tritonserver without Triton's headers, so the few types, constants
and calls of Triton's C API used here (tritonserver.h and tritonbackend.h, API 1.x) are declared
below; tritonserver resolves them when it loads the library. */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

/* Triton's C API: opaque handles, the enumerators used, and the calls. */
typedef struct TRITONSERVER_Error TRITONSERVER_Error;
typedef struct TRITONBACKEND_Model TRITONBACKEND_Model;
typedef struct TRITONBACKEND_ModelInstance TRITONBACKEND_ModelInstance;
typedef struct TRITONBACKEND_Request TRITONBACKEND_Request;
typedef struct TRITONBACKEND_Response TRITONBACKEND_Response;
typedef struct TRITONBACKEND_Input TRITONBACKEND_Input;
typedef struct TRITONBACKEND_Output TRITONBACKEND_Output;
typedef int TRITONSERVER_DataType;
typedef int TRITONSERVER_MemoryType;
typedef int TRITONBACKEND_ArtifactType;
enum { ERROR_INTERNAL = 1, ERROR_INVALID_ARG = 3 };
enum { TYPE_UINT8 = 2, TYPE_INT64 = 9, TYPE_FP16 = 10, TYPE_FP32 = 11 };
enum { MEMORY_CPU = 0, MEMORY_CPU_PINNED = 1, MEMORY_GPU = 2 };
enum { ARTIFACT_FILESYSTEM = 0 };
enum { REQUEST_RELEASE_ALL = 1, RESPONSE_COMPLETE_FINAL = 1 };

TRITONSERVER_Error* TRITONSERVER_ErrorNew(int code, const char* message);
void TRITONSERVER_ErrorDelete(TRITONSERVER_Error* error);
TRITONSERVER_Error* TRITONBACKEND_ModelRepository(
    TRITONBACKEND_Model* model, TRITONBACKEND_ArtifactType* artifact_type, const char** location);
TRITONSERVER_Error* TRITONBACKEND_ModelVersion(TRITONBACKEND_Model* model, uint64_t* version);
TRITONSERVER_Error* TRITONBACKEND_ModelSetState(TRITONBACKEND_Model* model, void* state);
TRITONSERVER_Error* TRITONBACKEND_ModelState(TRITONBACKEND_Model* model, void** state);
TRITONSERVER_Error* TRITONBACKEND_ModelInstanceModel(TRITONBACKEND_ModelInstance* instance, TRITONBACKEND_Model** model);
TRITONSERVER_Error* TRITONBACKEND_RequestInput(
    TRITONBACKEND_Request* request, const char* name, TRITONBACKEND_Input** input);
TRITONSERVER_Error* TRITONBACKEND_InputProperties(
    TRITONBACKEND_Input* input, const char** name, TRITONSERVER_DataType* datatype, const int64_t** shape,
    uint32_t* dims_count, uint64_t* byte_size, uint32_t* buffer_count);
TRITONSERVER_Error* TRITONBACKEND_InputBuffer(
    TRITONBACKEND_Input* input, uint32_t index, const void** buffer, uint64_t* buffer_byte_size,
    TRITONSERVER_MemoryType* memory_type, int64_t* memory_type_id);
TRITONSERVER_Error* TRITONBACKEND_RequestOutputCount(TRITONBACKEND_Request* request, uint32_t* count);
TRITONSERVER_Error* TRITONBACKEND_RequestOutputName(
    TRITONBACKEND_Request* request, uint32_t index, const char** output_name);
TRITONSERVER_Error* TRITONBACKEND_ResponseNew(TRITONBACKEND_Response** response, TRITONBACKEND_Request* request);
TRITONSERVER_Error* TRITONBACKEND_ResponseOutput(
    TRITONBACKEND_Response* response, TRITONBACKEND_Output** output, const char* name,
    TRITONSERVER_DataType datatype, const int64_t* shape, uint32_t dims_count);
TRITONSERVER_Error* TRITONBACKEND_OutputBuffer(
    TRITONBACKEND_Output* output, void** buffer, uint64_t buffer_byte_size, TRITONSERVER_MemoryType* memory_type,
    int64_t* memory_type_id);
TRITONSERVER_Error* TRITONBACKEND_ResponseSend(
    TRITONBACKEND_Response* response, uint32_t send_flags, TRITONSERVER_Error* error);
TRITONSERVER_Error* TRITONBACKEND_RequestRelease(TRITONBACKEND_Request* request, uint32_t release_flags);
TRITONSERVER_Error* TRITONBACKEND_ModelInstanceReportStatistics(
    TRITONBACKEND_ModelInstance* instance, TRITONBACKEND_Request* request, bool success, uint64_t exec_start_ns,
    uint64_t compute_start_ns, uint64_t compute_end_ns, uint64_t exec_end_ns);
TRITONSERVER_Error* TRITONBACKEND_ModelInstanceReportBatchStatistics(
    TRITONBACKEND_ModelInstance* instance, uint64_t batch_size, uint64_t exec_start_ns, uint64_t compute_start_ns,
    uint64_t compute_end_ns, uint64_t exec_end_ns);

#define EXPORTED __attribute__((visibility("default")))
#define TRY(call)                              \
    do {                                       \
        TRITONSERVER_Error* error_ = (call);   \
        if (error_ != NULL) return error_;     \
    } while (0)

#define MAX_DIMS 8
#define MAX_OUTPUTS 4
#define MAX_NAME 128
#define PREDICTION_SCALE 0.5f /* each step shrinks the latents a little: any number of steps stays finite */
#define STD 0.01f            /* the VAE encoder's posterior spread */

typedef enum { TEXT_ENCODER, DENOISER, VAE_DECODER, VAE_ENCODER } Role;

typedef struct {
    char name[MAX_NAME];
    TRITONSERVER_DataType datatype;
    int64_t dims[MAX_DIMS]; /* per sample, -1 where the request's input sets it */
    uint32_t dims_count;
} Tensor;

typedef struct {
    Role role;
    char input[MAX_NAME]; /* the input whose shape the outputs follow */
    Tensor outputs[MAX_OUTPUTS];
    uint32_t output_count;
    int64_t vae_scale_factor;
    uint64_t* ns_by_batch; /* [b - 1]: a call of b samples */
    uint32_t max_batch;
    int gpu; /* the repository's folder, flocked while a model computes */
} Simulation;

typedef struct {
    const void* data; /* contiguous, CPU */
    void* owned;      /* set where the buffers were gathered into one */
    const int64_t* shape;
    uint32_t dims_count;
    TRITONSERVER_DataType datatype;
} InputView;

__attribute__((format(printf, 2, 3))) static TRITONSERVER_Error* fail(int code, const char* format, ...) {
    char message[512];
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(message, sizeof message, format, arguments);
    va_end(arguments);
    return TRITONSERVER_ErrorNew(code, message);
}

static uint64_t now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now); /* Triton's steady clock, which its statistics read */
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static void sleep_until(uint64_t deadline_ns) {
    struct timespec until = {.tv_sec = (time_t)(deadline_ns / 1000000000u), .tv_nsec = (long)(deadline_ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {
    }
}

static size_t element_size(TRITONSERVER_DataType datatype) {
    switch (datatype) {
        case TYPE_UINT8: return 1;
        case TYPE_FP16: return 2;
        case TYPE_FP32: return 4;
        case TYPE_INT64: return 8;
        default: return 0;
    }
}

static TRITONSERVER_DataType datatype_named(const char* name) {
    if (strcmp(name, "UINT8") == 0) return TYPE_UINT8;
    if (strcmp(name, "FP16") == 0) return TYPE_FP16;
    if (strcmp(name, "FP32") == 0) return TYPE_FP32;
    if (strcmp(name, "INT64") == 0) return TYPE_INT64;
    return -1;
}

/* simulation.txt, a `key value...` line each; see export/simulate.py, which writes it. */
static TRITONSERVER_Error* read_simulation(const char* path, Simulation* simulation) {
    FILE* file = fopen(path, "r");
    if (file == NULL) return fail(ERROR_INTERNAL, "cannot read the simulation file %s", path);
    char* line = NULL;
    size_t capacity = 0;
    const char* problem = NULL;
    bool has_role = false;
    while (problem == NULL && getline(&line, &capacity, file) != -1) {
        char* rest = NULL;
        const char* key = strtok_r(line, " \n", &rest);
        if (key == NULL || key[0] == '#') continue;
        if (strcmp(key, "role") == 0) {
            const char* role = strtok_r(NULL, " \n", &rest);
            const char* roles[] = {"text_encoder", "denoiser", "vae_decoder", "vae_encoder"};
            has_role = false;
            for (int index = 0; role != NULL && index < 4 && !has_role; index++) {
                has_role = strcmp(role, roles[index]) == 0;
                simulation->role = (Role)index;
            }
            if (!has_role) problem = "an unknown role";
        } else if (strcmp(key, "input") == 0) {
            const char* name = strtok_r(NULL, " \n", &rest);
            if (name == NULL || strlen(name) >= MAX_NAME) problem = "a bad input line";
            else strcpy(simulation->input, name);
        } else if (strcmp(key, "vae_scale_factor") == 0) {
            const char* value = strtok_r(NULL, " \n", &rest);
            simulation->vae_scale_factor = value == NULL ? 0 : strtoll(value, NULL, 10);
        } else if (strcmp(key, "output") == 0) {
            const char* name = strtok_r(NULL, " \n", &rest);
            const char* datatype = strtok_r(NULL, " \n", &rest);
            if (simulation->output_count == MAX_OUTPUTS || name == NULL || datatype == NULL || strlen(name) >= MAX_NAME) {
                problem = "a bad output line";
                continue;
            }
            Tensor* output = &simulation->outputs[simulation->output_count++];
            strcpy(output->name, name);
            output->datatype = datatype_named(datatype);
            if (element_size(output->datatype) == 0) problem = "an output of a datatype it cannot write";
            for (const char* dim; (dim = strtok_r(NULL, " \n", &rest)) != NULL;) {
                if (output->dims_count == MAX_DIMS) problem = "an output of too many dimensions";
                else output->dims[output->dims_count++] = strtoll(dim, NULL, 10);
            }
        } else if (strcmp(key, "ms_by_batch") == 0) {
            simulation->ns_by_batch = calloc(256, sizeof(uint64_t));
            for (const char* ms; simulation->ns_by_batch != NULL && simulation->max_batch < 256 &&
                                  (ms = strtok_r(NULL, " \n", &rest)) != NULL;) {
                simulation->ns_by_batch[simulation->max_batch++] = (uint64_t)llround(strtod(ms, NULL) * 1e6);
            }
        }
    }
    free(line);
    fclose(file);
    if (problem == NULL && (!has_role || simulation->input[0] == '\0' || simulation->output_count == 0 ||
                            simulation->max_batch == 0 || simulation->vae_scale_factor < 1)) {
        problem = "a missing role, input, output, ms_by_batch or vae_scale_factor";
    }
    return problem == NULL ? NULL : fail(ERROR_INTERNAL, "the simulation file has %s", problem);
}

EXPORTED TRITONSERVER_Error* TRITONBACKEND_ModelInitialize(TRITONBACKEND_Model* model) {
    TRITONBACKEND_ArtifactType artifact;
    const char* location; /* the model's folder */
    uint64_t version;
    TRY(TRITONBACKEND_ModelRepository(model, &artifact, &location));
    TRY(TRITONBACKEND_ModelVersion(model, &version));
    if (artifact != ARTIFACT_FILESYSTEM) return fail(ERROR_INVALID_ARG, "%s is not on a filesystem", location);
    char path[4096];
    snprintf(path, sizeof path, "%s/%llu/simulation.txt", location, (unsigned long long)version);
    Simulation* simulation = calloc(1, sizeof(Simulation));
    if (simulation == NULL) return fail(ERROR_INTERNAL, "out of memory for %s", path);
    TRITONSERVER_Error* error = read_simulation(path, simulation);
    if (error == NULL) {
        snprintf(path, sizeof path, "%s/..", location);
        simulation->gpu = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (simulation->gpu < 0) error = fail(ERROR_INTERNAL, "cannot open the repository %s", path);
    }
    if (error == NULL) error = TRITONBACKEND_ModelSetState(model, simulation);
    if (error != NULL) {
        free(simulation->ns_by_batch);
        free(simulation);
    }
    return error;
}

EXPORTED TRITONSERVER_Error* TRITONBACKEND_ModelFinalize(TRITONBACKEND_Model* model) {
    Simulation* simulation;
    TRY(TRITONBACKEND_ModelState(model, (void**)&simulation));
    close(simulation->gpu);
    free(simulation->ns_by_batch);
    free(simulation);
    return NULL;
}

EXPORTED TRITONSERVER_Error* TRITONBACKEND_ModelInstanceInitialize(TRITONBACKEND_ModelInstance* instance) {
    (void)instance;
    return NULL;
}

EXPORTED TRITONSERVER_Error* TRITONBACKEND_ModelInstanceFinalize(TRITONBACKEND_ModelInstance* instance) {
    (void)instance;
    return NULL;
}

/* The request's input `name`, its buffers gathered where Triton holds it in more than one. */
static TRITONSERVER_Error* read_input(TRITONBACKEND_Request* request, const char* name, InputView* view) {
    TRITONBACKEND_Input* input;
    const char* input_name;
    uint64_t byte_size;
    uint32_t buffer_count;
    TRY(TRITONBACKEND_RequestInput(request, name, &input));
    TRY(TRITONBACKEND_InputProperties(input, &input_name, &view->datatype, &view->shape, &view->dims_count, &byte_size,
                                      &buffer_count));
    if (view->dims_count < 1 || view->dims_count > MAX_DIMS) return fail(ERROR_INVALID_ARG, "input %s has no batch", name);
    for (uint32_t index = 0, offset = 0; index < buffer_count; index++) {
        const void* buffer;
        uint64_t size;
        TRITONSERVER_MemoryType memory;
        int64_t memory_id;
        TRY(TRITONBACKEND_InputBuffer(input, index, &buffer, &size, &memory, &memory_id));
        if (memory == MEMORY_GPU) return fail(ERROR_INVALID_ARG, "input %s is in GPU memory", name);
        if (buffer_count == 1) {
            view->data = buffer;
            return NULL;
        }
        if (view->owned == NULL && (view->owned = malloc(byte_size)) == NULL) {
            return fail(ERROR_INTERNAL, "out of memory for input %s", name);
        }
        memcpy((char*)view->owned + offset, buffer, size);
        offset += size;
    }
    view->data = view->owned;
    return NULL;
}

static TRITONSERVER_Error* new_output(TRITONBACKEND_Response* response, const Tensor* tensor, const int64_t* shape,
                                      uint32_t dims_count, void** buffer, uint64_t* elements) {
    TRITONBACKEND_Output* output;
    TRITONSERVER_MemoryType memory = MEMORY_CPU;
    int64_t memory_id = 0;
    *elements = 1;
    for (uint32_t dim = 0; dim < dims_count; dim++) *elements *= (uint64_t)shape[dim];
    TRY(TRITONBACKEND_ResponseOutput(response, &output, tensor->name, tensor->datatype, shape, dims_count));
    TRY(TRITONBACKEND_OutputBuffer(output, buffer, *elements * element_size(tensor->datatype), &memory, &memory_id));
    if (memory != MEMORY_CPU && memory != MEMORY_CPU_PINNED) return fail(ERROR_INTERNAL, "output %s is not in CPU memory", tensor->name);
    return NULL;
}

static const Tensor* output_named(const Simulation* simulation, const char* name) {
    for (uint32_t index = 0; index < simulation->output_count; index++) {
        if (strcmp(simulation->outputs[index].name, name) == 0) return &simulation->outputs[index];
    }
    return NULL;
}

/* One requested output, from the input its shapes follow (`simulation->input`). */
static TRITONSERVER_Error* write_output(const Simulation* simulation, const InputView* input, const Tensor* tensor,
                                        TRITONBACKEND_Response* response) {
    const int64_t* in = input->shape;
    const int64_t factor = simulation->vae_scale_factor;
    int64_t shape[MAX_DIMS + 1] = {in[0]};
    uint32_t dims_count = tensor->dims_count + 1;
    uint64_t elements;
    void* buffer;
    bool float_input = input->datatype == TYPE_FP32;
    switch (simulation->role) {
        case TEXT_ENCODER: /* zeros, the token axis the prompt's */
            for (uint32_t dim = 0; dim < tensor->dims_count; dim++) {
                shape[dim + 1] = tensor->dims[dim] == -1 && input->dims_count > 1 ? in[1] : tensor->dims[dim];
            }
            TRY(new_output(response, tensor, shape, dims_count, &buffer, &elements));
            memset(buffer, 0, elements * element_size(tensor->datatype));
            return NULL;
        case DENOISER: { /* the latents, scaled */
            if (!float_input || tensor->datatype != TYPE_FP32) break;
            TRY(new_output(response, tensor, in, input->dims_count, &buffer, &elements));
            const float* latents = input->data;
            float* prediction = buffer;
            for (uint64_t index = 0; index < elements; index++) prediction[index] = latents[index] * PREDICTION_SCALE;
            return NULL;
        }
        case VAE_DECODER: { /* (B, H, W, 3) uint8: the latents' first three channels around grey, a cell a square */
            if (!float_input || tensor->datatype != TYPE_UINT8 || input->dims_count != 4 || in[1] < 3) break;
            const int64_t height = in[2] * factor, width = in[3] * factor;
            const int64_t image[4] = {in[0], height, width, 3};
            TRY(new_output(response, tensor, image, 4, &buffer, &elements));
            const float* latent = input->data;
            uint8_t* pixels = buffer;
            for (int64_t b = 0; b < in[0]; b++) {
                for (int64_t y = 0; y < height; y++) {
                    for (int64_t x = 0; x < width; x++) {
                        for (int64_t c = 0; c < 3; c++) {
                            float value = 128 + 64 * latent[((b * in[1] + c) * in[2] + y / factor) * in[3] + x / factor];
                            *pixels++ = (uint8_t)(value < 0 ? 0 : value > 255 ? 255 : value);
                        }
                    }
                }
            }
            return NULL;
        }
        case VAE_ENCODER: { /* the image's corner pixel of every cell, its channels repeated to the latents' */
            if (!float_input || tensor->datatype != TYPE_FP32 || input->dims_count != 4 || tensor->dims_count != 3) break;
            const int64_t channels = tensor->dims[0], height = (in[2] + factor - 1) / factor;
            const int64_t width = (in[3] + factor - 1) / factor;
            const int64_t latent[4] = {in[0], channels, height, width};
            TRY(new_output(response, tensor, latent, 4, &buffer, &elements));
            const float* image = input->data;
            float* values = buffer;
            const bool spread = strcmp(tensor->name, "latent_std") == 0;
            for (int64_t b = 0; b < in[0]; b++) {
                for (int64_t k = 0; k < channels; k++) {
                    for (int64_t y = 0; y < height; y++) {
                        for (int64_t x = 0; x < width; x++) {
                            const int64_t pixel = ((b * in[1] + k % in[1]) * in[2] + y * factor) * in[3] + x * factor;
                            *values++ = spread ? STD : image[pixel] * 2 - 1;
                        }
                    }
                }
            }
            return NULL;
        }
    }
    return fail(ERROR_INVALID_ARG, "output %s does not follow from its input's type or shape", tensor->name);
}

/* The request's response, every output it asks for written; sent later, when the GPU time is up. */
static TRITONSERVER_Error* respond(const Simulation* simulation, TRITONBACKEND_Request* request,
                                   const InputView* input, TRITONBACKEND_Response* response) {
    uint32_t count;
    TRY(TRITONBACKEND_RequestOutputCount(request, &count));
    for (uint32_t index = 0; index < count; index++) {
        const char* name;
        TRY(TRITONBACKEND_RequestOutputName(request, index, &name));
        const Tensor* tensor = output_named(simulation, name);
        if (tensor == NULL) return fail(ERROR_INVALID_ARG, "no output %s", name);
        TRY(write_output(simulation, input, tensor, response));
    }
    return NULL;
}

EXPORTED TRITONSERVER_Error* TRITONBACKEND_ModelInstanceExecute(TRITONBACKEND_ModelInstance* instance,
                                                                TRITONBACKEND_Request** requests, const uint32_t count) {
    const uint64_t exec_start = now_ns();
    TRITONBACKEND_Model* model;
    Simulation* simulation;
    TRY(TRITONBACKEND_ModelInstanceModel(instance, &model));
    TRY(TRITONBACKEND_ModelState(model, (void**)&simulation));
    InputView* inputs = calloc(count, sizeof(InputView));
    TRITONBACKEND_Response** responses = calloc(count, sizeof(TRITONBACKEND_Response*));
    TRITONSERVER_Error** errors = calloc(count, sizeof(TRITONSERVER_Error*));
    if (inputs == NULL || responses == NULL || errors == NULL) {
        free(inputs), free(responses), free(errors);
        return fail(ERROR_INTERNAL, "out of memory for a batch of %u requests", count);
    }
    uint64_t samples = 0;
    for (uint32_t index = 0; index < count; index++) {
        errors[index] = TRITONBACKEND_ResponseNew(&responses[index], requests[index]);
        if (errors[index] == NULL) errors[index] = read_input(requests[index], simulation->input, &inputs[index]);
        if (errors[index] == NULL) samples += (uint64_t)inputs[index].shape[0];
    }
    const bool priced = samples >= 1 && samples <= simulation->max_batch;
    flock(simulation->gpu, LOCK_EX);
    const uint64_t compute_start = now_ns();
    for (uint32_t index = 0; index < count; index++) {
        if (errors[index] == NULL && !priced) {
            errors[index] = fail(ERROR_INVALID_ARG, "a batch of %llu samples is past the cost table's %u",
                                 (unsigned long long)samples, simulation->max_batch);
        }
        if (errors[index] == NULL) errors[index] = respond(simulation, requests[index], &inputs[index], responses[index]);
    }
    if (priced) sleep_until(compute_start + simulation->ns_by_batch[samples - 1]);
    const uint64_t compute_end = now_ns();
    flock(simulation->gpu, LOCK_UN);
    for (uint32_t index = 0; index < count; index++) {
        if (responses[index] != NULL) {
            TRITONSERVER_Error* unsent = TRITONBACKEND_ResponseSend(responses[index], RESPONSE_COMPLETE_FINAL, errors[index]);
            if (unsent != NULL) TRITONSERVER_ErrorDelete(unsent);
        }
        TRITONSERVER_Error* unreported = TRITONBACKEND_ModelInstanceReportStatistics(
            instance, requests[index], errors[index] == NULL, exec_start, compute_start, compute_end, now_ns());
        if (unreported != NULL) TRITONSERVER_ErrorDelete(unreported);
        if (errors[index] != NULL) TRITONSERVER_ErrorDelete(errors[index]);
        free(inputs[index].owned);
        TRITONSERVER_Error* unreleased = TRITONBACKEND_RequestRelease(requests[index], REQUEST_RELEASE_ALL);
        if (unreleased != NULL) TRITONSERVER_ErrorDelete(unreleased);
    }
    if (priced) {
        TRITONSERVER_Error* unreported = TRITONBACKEND_ModelInstanceReportBatchStatistics(
            instance, samples, exec_start, compute_start, compute_end, now_ns());
        if (unreported != NULL) TRITONSERVER_ErrorDelete(unreported);
    }
    free(inputs), free(responses), free(errors);
    return NULL;
}
