//! The shader module, its bind group layout and bind group, and a pipeline for each kernel the
//! plan dispatches (and no other).

use super::kernels::KernelId;
use super::plan::ChunkUniform;
use super::variants::Variant;
use crate::model::{Loss, Model};

/// The pipelines of the kernels a plan dispatches, and only those.
#[derive(Debug)]
pub(super) struct Pipelines(Vec<(KernelId, wgpu::ComputePipeline)>);

impl Pipelines {
    pub(super) fn get(&self, kernel: KernelId) -> &wgpu::ComputePipeline {
        self.0
            .iter()
            .find(|(k, _)| *k == kernel)
            .map(|(_, p)| p)
            .expect("every planned kernel has its pipeline")
    }
}

/// The shader module, bind group layout and pipelines of the planned `kernels` (each specialised
/// for `loss`, each `reuse_seq` part by its own override constants too), and the bind group over
/// `uniforms` and the storage buffers `bound` (bindings 1 to 8 in `shaders/common.wgsl`'s order).
pub(super) fn build_pipelines(
    device: &wgpu::Device,
    model: &Model,
    (closed, loss): (bool, Loss),
    kernels: &[(KernelId, u64)],
    uniforms: &wgpu::Buffer,
    bound: [&wgpu::Buffer; 8],
) -> (Pipelines, wgpu::BindGroup) {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("perturb kernels"),
        source: wgpu::ShaderSource::Wgsl(super::nudge_shader_source().into()),
    });
    let entry =
        |binding: u32, ty: wgpu::BufferBindingType, dynamic: bool| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: dynamic,
                min_binding_size: None,
            },
            count: None,
        };
    let ro = wgpu::BufferBindingType::Storage { read_only: true };
    let rw = wgpu::BufferBindingType::Storage { read_only: false };
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("nudge"),
        entries: &[
            entry(0, wgpu::BufferBindingType::Uniform, true),
            entry(1, ro, false),
            entry(2, ro, false),
            entry(3, ro, false),
            entry(4, ro, false),
            entry(5, rw, false),
            entry(6, rw, false),
            entry(7, rw, false),
            entry(8, rw, false),
        ],
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("nudge"),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    // One function makes the constants here and in the list `perturb shaders` translates.
    let specialised = |k: KernelId| {
        let variant = Variant::planned(model, closed, loss, k);
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(variant.entry_point()),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(variant.entry_point()),
            // Every workgroup value is written before it is read; zeroing 16 KiB per
            // workgroup (a shader loop on GL) would dominate small evaluations.
            compilation_options: wgpu::PipelineCompilationOptions {
                zero_initialize_workgroup_memory: false,
                constants: &variant.constants(),
            },
            cache: None,
        })
    };
    let pipelines = Pipelines(kernels.iter().map(|&(k, _)| (k, specialised(k))).collect());
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("nudge"),
        layout: &layout,
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: uniforms,
                offset: 0,
                size: wgpu::BufferSize::new(std::mem::size_of::<ChunkUniform>() as u64),
            }),
        }]
        .into_iter()
        .chain((1..).zip(bound).map(|(i, b)| bind(i, b)))
        .collect::<Vec<_>>(),
    });
    (pipelines, bind_group)
}

fn bind(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}
